#!/usr/bin/env bash
# The OpenAPI tools of the test suite (tests/openapi_client.rs runs this): a venv under the cargo
# target dir holding openapi-spec-validator and openapi-python-client (PyPI), created once.
#
#   scripts/openapi-tools.sh validate DOC.json         validates DOC with openapi-spec-validator
#   scripts/openapi-tools.sh client DOC.json OUT_DIR   generates the Python client of DOC into
#                                                      OUT_DIR/<sha256 of DOC>/fpclient (cached;
#                                                      other documents' clients are removed)
#                                                      and prints that directory's parent
#   scripts/openapi-tools.sh python ARGS...            runs the venv's python
#
# The venv is built from /usr/bin/python3 (the system interpreter, stable across pyenv shims);
# FLEETPULSE_OPENAPI_VENV overrides where it lives.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${FLEETPULSE_OPENAPI_VENV:-${CARGO_TARGET_DIR:-$here/target}/openapi-venv}"
python=/usr/bin/python3
[ -x "$python" ] || python="$(command -v python3)"

if [ ! -x "$venv/bin/openapi-python-client" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  # One installer at a time: several test binaries may ask at once.
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  flock 9
  if [ ! -x "$venv/bin/openapi-python-client" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    "$python" -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "openapi-spec-validator>=0.7" "openapi-python-client>=0.21" >&2
  fi
  flock -u 9
fi

case "${1:-}" in
  validate)
    exec "$venv/bin/openapi-spec-validator" "$2"
    ;;
  client)
    doc="$2"
    hash="$(sha256sum "$doc" | cut -c1-16)"
    out="$3/$hash"
    if [ ! -f "$out/fpclient/__init__.py" ]; then
      mkdir -p "$3"
      tmp="$(mktemp -d "$3/gen.XXXXXX")"
      (cd "$tmp" && "$venv/bin/openapi-python-client" generate --path "$doc" --meta none --output-path fpclient >&2)
      rm -rf "$out"
      mv "$tmp" "$out"
      # Keep only this document's client: the cache stays one client big.
      find "$3" -mindepth 1 -maxdepth 1 -type d ! -path "$out" -exec rm -rf {} +
    fi
    echo "$out"
    ;;
  python)
    shift
    exec "$venv/bin/python" "$@"
    ;;
  *)
    echo "usage: $0 validate DOC | client DOC OUT_DIR | python ARGS..." >&2
    exit 2
    ;;
esac
