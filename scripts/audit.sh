#!/usr/bin/env bash
# Dependency audit against the RustSec advisory database snapshot in ../shared/advisory-db
# (no network needed for the database). Installs cargo-deny if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
snapshot="${FLEETPULSE_ADVISORY_DB:-$(cd .. && pwd)/shared/advisory-db}"
if [ ! -d "$snapshot" ]; then
  echo "advisory database snapshot not found at $snapshot" >&2
  exit 1
fi
command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --version 0.20.2
db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT
# cargo-deny expects a git checkout named after the default database URL.
cp -r "$snapshot" "$db/advisory-db-3157b0e258782691"
chmod -R u+w "$db"
git -C "$db/advisory-db-3157b0e258782691" init -q
git -C "$db/advisory-db-3157b0e258782691" add -A
git -C "$db/advisory-db-3157b0e258782691" -c user.email=ci@localhost -c user.name=ci commit -qm snapshot
# cargo-deny reads `cargo metadata` offline: fetch every locked package first (every platform's,
# also those this machine does not build, such as jiff's optional static tz database).
cargo fetch --locked >/dev/null
sed "s|@DB_PATH@|$db|" deny.toml.in > "$db/deny.toml"
cargo deny --offline --config "$db/deny.toml" check advisories
