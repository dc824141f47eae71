#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh Debian machine, then runs
# every test of the workspace. Servers the tests need are started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

# Nothing beyond the Rust toolchain is needed yet: the embedded store is bundled SQLite and the
# QUIC stack is pure Rust (ring). Later backends add their Debian packages here.

cargo test --workspace --all-targets --no-fail-fast
