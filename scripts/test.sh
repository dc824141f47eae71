#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh Debian machine, then runs
# every test of the workspace. The tests start their own servers (ClickHouse, PostgreSQL, SMTP) on free
# loopback ports in temporary directories; nothing is skipped when a server is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
{ command -v clickhouse-server || [ -x /usr/sbin/clickhouse-server ] || command -v clickhouse; } >/dev/null 2>&1 || need+=(clickhouse-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need+=(python3-aiosmtpd)
# tests/openapi_client.rs: scripts/openapi-tools.sh makes a venv (PyPI: openapi-spec-validator,
# openapi-python-client) under the target dir.
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || need+=(chromium chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test servers: ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  # The packages may start system services; the tests use their own instances.
  $sudo service clickhouse-server stop >/dev/null 2>&1 || true
  $sudo service postgresql stop >/dev/null 2>&1 || true
fi

cargo test --workspace --all-targets --no-fail-fast
