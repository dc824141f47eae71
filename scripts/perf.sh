#!/usr/bin/env bash
# Whole-system figures for docs/PERFORMANCE.md: starts a release `fleetpulse serve` on loopback,
# drives it with `fleetpulse-loadtest`, and reads the server's CPU time and RSS from /proc.
#   scripts/perf.sh throughput DEVICES RATE BURST SECONDS   # CPU per message, ack latency
#   scripts/perf.sh idle DEVICES [SECONDS]                  # RSS per idle connection, setup rate
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
[ -x "$target/fleetpulse" ] && [ -x "$target/fleetpulse-loadtest" ] || cargo build --release -p fleetpulse -p fleetpulse-loadtest
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
export FLEETPULSE_ADMIN_EMAIL=perf@localhost FLEETPULSE_ADMIN_PASSWORD=perf-password FLEETPULSE_LOG=warn
"$target/fleetpulse" serve --data-dir "$work/data" --quic-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 >"$work/out" &
server=$!
until grep -q "fleetpulse listening" "$work/out" 2>/dev/null; do sleep 0.1; done
line=$(grep "fleetpulse listening" "$work/out")
quic=$(sed 's/.*quic=\([^ ]*\).*/\1/' <<<"$line"); http=$(sed 's/.*http=\([^ ]*\).*/\1/' <<<"$line")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
hz=$(getconf CLK_TCK)
lt() { "$target/fleetpulse-loadtest" --quic-addr "$quic" --api "http://$http" --ca-cert "$work/data/tls/ca.pem" \
        --no-progress --report "$work/report.json" "$@" >/dev/null; }
case "${1:-}" in
throughput)
  devices=$2 rate=$3 burst=$4 secs=$5
  t0=$(cpu_ticks)
  lt --devices "$devices" --rate "$rate" --burst "$burst" --duration "${secs}s" --heartbeat-interval 30 --connect-rate 2000
  t1=$(cpu_ticks)
  python3 - "$work/report.json" "$t0" "$t1" "$hz" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); t0, t1, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cpu_s = (t1 - t0) / hz
print(json.dumps({"devices": r["devices"], "acked": r["acked"], "rate_msgs_per_s": round(r["rate_msgs_per_s"]),
  "server_cpu_s": cpu_s, "server_cpu_us_per_msg": round(cpu_s * 1e6 / max(r["acked"], 1), 1),
  "ack_latency_us": r["ack_latency_us"], "verified": r["verified"]}))
PY
  ;;
idle)
  devices=$2 secs=${3:-20}
  sleep 1; r0=$(rss_kib)
  lt --devices "$devices" --rate 0 --duration "${secs}s" --heartbeat-interval 300 --connect-rate "${CONNECT_RATE:-0}" --drain-timeout 5s &
  lt_pid=$!
  sleep $((secs - 2)); r1=$(rss_kib)
  wait $lt_pid || true
  python3 - "$work/report.json" "$r0" "$r1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r0, r1 = int(sys.argv[2]), int(sys.argv[3])
n = r["connections"]["established"]
print(json.dumps({"devices": n, "rss_before_kib": r0, "rss_connected_kib": r1,
  "rss_per_device_kib": round((r1 - r0) / max(n, 1), 1),
  "setup_rate_per_s": round(r["connections"]["setup_rate_per_s"]), "setup_latency_us": r["connections"]["setup_latency_us"]}))
PY
  ;;
*) echo "usage: $0 throughput DEVICES RATE BURST SECONDS | idle DEVICES [SECONDS]" >&2; exit 2 ;;
esac
