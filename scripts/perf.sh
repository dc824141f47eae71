#!/usr/bin/env bash
# Whole-system figures for docs/PERFORMANCE.md: starts a release `fleetpulse serve` on loopback,
# drives it with `fleetpulse-loadtest`, and reads the server's CPU time and RSS from /proc.
#   scripts/perf.sh throughput DEVICES RATE BURST SECONDS   # CPU per message, ack latency
#   scripts/perf.sh idle DEVICES [SECONDS]                  # RSS per idle connection, setup rate
#   scripts/perf.sh alarms DEVICES ALARM_RATE SECONDS       # device alarm -> SMTP accepted latency (ALM-5)
#   scripts/perf.sh commands DEVICES COMMANDS               # command round trip through the API (ING-8)
#   scripts/perf.sh bulk DEVICES [KIND]                     # one bulk command to every device (ING-8)
#   scripts/perf.sh alarms-compare                          # alarm -> inbox, fleetpulse and Prometheus
#                                                           # Alertmanager side by side (issue 20;
#                                                           # scripts/alarms_compare.py)
#   scripts/perf.sh compare [DEVICES] [BURST]               # fleetpulse, the QUIC floor and Mosquitto side
#                                                           # by side: pinned cores, max-rate search, CPU per
#                                                           # message at 80 % (issue 14; scripts/perf_compare.py)
# alarms: the server sends its notification emails to the load tester's SMTP sink (config file
# below, grouping off); RATE (data frames per second per device, default 0), SMTP_PORT (default: a
# free port) and ALARM_DRAIN_TIMEOUT (seconds, default 30) may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
  echo "usage: $0 throughput DEVICES RATE BURST SECONDS | idle DEVICES [SECONDS] | alarms DEVICES ALARM_RATE SECONDS" >&2
  echo "       $0 commands DEVICES COMMANDS | bulk DEVICES [KIND] | compare [DEVICES] [BURST] | alarms-compare" >&2
  exit 2
}
if [ "${1:-}" = alarms-compare ]; then
  shift
  exec python3 "$(dirname "$0")/alarms_compare.py" "$@"
fi
if [ "${1:-}" = compare ]; then
  shift
  exec python3 "$(dirname "$0")/perf_compare.py" "$@"
fi
case "${1:-}" in
throughput) [ $# -eq 5 ] || usage ;;
idle) [ $# -eq 2 ] || [ $# -eq 3 ] || usage ;;
alarms) [ $# -eq 4 ] || usage ;;
commands) [ $# -eq 3 ] || usage ;;
bulk) [ $# -eq 2 ] || [ $# -eq 3 ] || usage ;;
*) usage ;;
esac
target="${CARGO_TARGET_DIR:-target}/release"
[ -x "$target/fleetpulse" ] && [ -x "$target/fleetpulse-loadtest" ] || cargo build --release -p fleetpulse -p fleetpulse-loadtest
work=$(mktemp -d)
server=
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
export FLEETPULSE_ADMIN_EMAIL=perf@localhost FLEETPULSE_ADMIN_PASSWORD=perf-password FLEETPULSE_LOG=warn
serve_args=()
if [ "$1" = alarms ]; then
  smtp_port=${SMTP_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  cat >"$work/server.toml" <<TOML
[smtp]
host = "127.0.0.1"
port = $smtp_port
security = "plain"
from = "fleetpulse <alarms@fleetpulse.test>"

[notify]
portal_url = "http://127.0.0.1:8080"
per_receiver_per_minute = 100000
global_per_second = 100000
TOML
  serve_args+=(--config "$work/server.toml")
fi
"$target/fleetpulse" serve ${serve_args[@]+"${serve_args[@]}"} --data-dir "$work/data" --quic-addr 127.0.0.1:0 \
  --http-addr 127.0.0.1:0 >"$work/out" &
server=$!
until grep -q "fleetpulse listening" "$work/out" 2>/dev/null; do
  kill -0 "$server" 2>/dev/null || { echo "$0: fleetpulse serve exited before listening" >&2; exit 1; }
  sleep 0.1
done
line=$(grep "fleetpulse listening" "$work/out")
quic=$(sed 's/.*quic=\([^ ]*\).*/\1/' <<<"$line"); http=$(sed 's/.*http=\([^ ]*\).*/\1/' <<<"$line")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
hz=$(getconf CLK_TCK)
lt() { "$target/fleetpulse-loadtest" --quic-addr "$quic" --api "http://$http" --ca-cert "$work/data/tls/ca.pem" \
        --no-progress --report "$work/report.json" "$@" >/dev/null; }
case "$1" in
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
alarms)
  devices=$2 alarm_rate=$3 secs=$4
  rc=0
  lt --devices "$devices" --rate "${RATE:-0}" --duration "${secs}s" --heartbeat-interval 30 --connect-rate 2000 \
     --alarm-rate "$alarm_rate" --smtp-sink "127.0.0.1:$smtp_port" --alarm-drain-timeout "${ALARM_DRAIN_TIMEOUT:-30}s" || rc=$?
  [ -s "$work/report.json" ] || { echo "$0: fleetpulse-loadtest failed (exit $rc)" >&2; exit 1; }
  python3 - "$work/report.json" "$alarm_rate" "$rc" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"devices": r["devices"], "alarm_rate": float(sys.argv[2]), "duration_s": round(r["duration_s"], 1),
  "alarm_email": r.get("alarm_email"), "alarm_stages": r.get("alarm_stages", []), "verified": r["verified"],
  "loadtest_exit": int(sys.argv[3])}))
PY
  ;;
commands | bulk)
  devices=$2
  if [ "$1" = commands ]; then mode=(--commands "$3" --command-kind ping --command-args '{"target": "10.0.0.1"}');
  else mode=(--bulk-command --command-kind "${3:-reboot}"); fi
  rc=0
  lt --devices "$devices" --rate 0 --duration 10s --heartbeat-interval 60 --connect-rate 2000 \
     --command-delay-ms "${COMMAND_DELAY_MS:-0}" "${mode[@]}" || rc=$?
  [ -s "$work/report.json" ] || { echo "$0: fleetpulse-loadtest failed (exit $rc)" >&2; exit 1; }
  python3 - "$work/report.json" "$rc" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"devices": r["devices"], "command_run": r.get("command_run"),
  "device_commands": r.get("device_commands"), "loadtest_exit": int(sys.argv[2])}))
PY
  ;;
esac
