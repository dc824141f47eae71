#!/usr/bin/env bash
# Whole-system figures for docs/PERFORMANCE.md: starts a release `fleetpulse serve` on loopback,
# drives it with `fleetpulse-loadtest`, and reads the server's CPU time and RSS from /proc.
#   scripts/perf.sh throughput DEVICES RATE BURST SECONDS   # CPU per message, ack latency
#                                                           # (TRANSPORT=https: over HTTPS ingest, ING-10)
#   scripts/perf.sh idle DEVICES [SECONDS]                  # RSS per idle connection, setup rate, server
#                                                           # CPU per session set-up (CONNECT_RATE paces;
#                                                           # KNOWN=1: a fleet the server knows reconnects)
#   scripts/perf.sh floor-idle DEVICES [SECONDS]            # the same for the QUIC floor (quic_floor and
#                                                           # fleetpulse-peerload --mode floor): a session's
#                                                           # set-up and an idle connection without fleetpulse
#   scripts/perf.sh relay-idle DEVICES RELAYS [SECONDS]     # server and relay RSS per idle device behind
#                                                           # RELAYS `fleetpulse relay` processes (ING-9),
#                                                           # server CPU per heartbeat once all are in
#                                                           # (HEARTBEAT, default 300 s); the relays' upstream
#                                                           # is QUIC (UPSTREAM=https: HTTP/2 to HTTPS ingest)
#   scripts/perf.sh relay-scale DEVICES RELAYS [SECONDS]    # server RSS per relayed device at scale: the load
#                                                           # tester as RELAYS relays (--transport relayed, one
#                                                           # HTTP/2 connection each); RSS and devices sampled
#                                                           # every 5 s; per device: the median RSS of the idle
#                                                           # phase (all in, load tester running), marginal
#                                                           # from half the devices; CPU per heartbeat once all
#                                                           # are in (HEARTBEAT, default 300 s)
#   scripts/perf.sh relay-flood DEVICES [SECONDS]           # DEVICES calm devices (5 frames/s) behind one real
#                                                           # relay, alone and then beside one flooding device:
#                                                           # their ack p99 both times and the ratio (ING-9)
#   scripts/perf.sh alarms DEVICES ALARM_RATE SECONDS       # device alarm -> SMTP accepted latency (ALM-5)
#   scripts/perf.sh commands DEVICES COMMANDS               # command round trip through the API (ING-8)
#   scripts/perf.sh bulk DEVICES [KIND]                     # one bulk command to every device (ING-8)
#   scripts/perf.sh alarms-compare                          # alarm -> inbox, fleetpulse and Prometheus
#                                                           # Alertmanager side by side (issue 20;
#                                                           # scripts/alarms_compare.py)
#   scripts/perf.sh compare [DEVICES] [BURST]               # fleetpulse, the QUIC floor and Mosquitto side
#                                                           # by side: pinned cores, max-rate search, CPU per
#                                                           # message at 80 % (issue 14; scripts/perf_compare.py)
#   scripts/perf.sh cluster NODES DEVICES RATE SECONDS      # NODES nodes on one throwaway PostgreSQL and
#                                                           # ClickHouse, DEVICES spread over them at RATE
#                                                           # frames/s each: acked msg/s, CPU per message of
#                                                           # nodes, PostgreSQL, ClickHouse (issue 16;
#                                                           # benches/src/bin/cluster_bench.rs)
#   scripts/perf.sh sink DEVICES RATE BURST SECONDS         # the load tester itself against load_sink (issue 14
#                                                           # item 5): its CPU per simulated message, RSS per
#                                                           # simulated device (RATE = msg/s for the whole fleet)
# alarms: the server sends its notification emails to the load tester's SMTP sink (config file
# below, grouping off); RATE (data frames per second per device, default 0), SMTP_PORT (default: a
# free port), SMTP_CONNECTIONS (`[smtp] connections`, default the server's) and ALARM_DRAIN_TIMEOUT
# (seconds, default 30) may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
  echo "usage: $0 throughput DEVICES RATE BURST SECONDS | idle DEVICES [SECONDS] | alarms DEVICES ALARM_RATE SECONDS" >&2
  echo "       $0 commands DEVICES COMMANDS | bulk DEVICES [KIND] | compare [DEVICES] [BURST] | alarms-compare" >&2
  echo "       $0 sink DEVICES RATE BURST SECONDS | cluster NODES DEVICES RATE SECONDS | floor-idle DEVICES [SECONDS]" >&2
  exit 2
}
# Idle devices (`idle`, `floor-idle`): the server's ($server) RSS and CPU time before and after
# DEVICES connect and stay idle for SECONDS, so the CPU is the sessions' set-up (handshake,
# authentication, registration, Welcome, the command check) and little else (heartbeats 300 s).
# The command after the two numbers starts the load tester, which writes $work/report.json.
idle_run() {
  local devices=$1 secs=$2 r0 r1 t0 t1 lt_pid
  shift 2
  server_rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
  server_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
  sleep 1; r0=$(server_rss); t0=$(server_ticks)
  "$@" --devices "$devices" --rate 0 --duration "${secs}s" --heartbeat-interval 300 \
    --connect-rate "${CONNECT_RATE:-0}" --drain-timeout 5s &
  lt_pid=$!
  sleep $((secs - 2)); r1=$(server_rss); t1=$(server_ticks)
  wait $lt_pid || true
  python3 - "$work/report.json" "$r0" "$r1" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r0, r1 = int(sys.argv[2]), int(sys.argv[3])
t0, t1, hz = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
c = r.get("connections", r)  # fleetpulse-loadtest nests them, fleetpulse-peerload does not
n = c["established"]
out = {"devices": n, "rss_before_kib": r0, "rss_connected_kib": r1,
       "rss_per_device_kib": round((r1 - r0) / max(n, 1), 1),
       "server_cpu_us_per_session": round((t1 - t0) / hz * 1e6 / max(n, 1), 1)}
if "setup_rate_per_s" in c:
    out["setup_rate_per_s"] = round(c["setup_rate_per_s"])
out["setup_latency_us"] = c["setup_latency_us"]
print(json.dumps(out))
PY
}
# Many devices: one TCP connection each in the MQTT mode, and the sink's and the servers' sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "${1:-}" = alarms-compare ]; then
  shift
  exec python3 "$(dirname "$0")/alarms_compare.py" "$@"
fi
if [ "${1:-}" = cluster ]; then
  [ $# -eq 5 ] || usage
  target="${CARGO_TARGET_DIR:-target}/release"
  [ -x "$target/cluster_bench" ] && [ -x "$target/fleetpulse" ] && [ -x "$target/fleetpulse-loadtest" ] ||
    cargo build --release -p fleetpulse -p fleetpulse-loadtest -p fleetpulse-benches --bins
  shift
  exec "$target/cluster_bench" "$@"
fi
if [ "${1:-}" = compare ]; then
  shift
  exec python3 "$(dirname "$0")/perf_compare.py" "$@"
fi
if [ "${1:-}" = sink ]; then
  [ $# -eq 5 ] || usage
  devices=$2 rate=$3 burst=$4 secs=$5
  target="${CARGO_TARGET_DIR:-target}/release"
  [ -x "$target/load_sink" ] && [ -x "$target/fleetpulse-loadtest" ] ||
    cargo build --release -p fleetpulse-loadtest -p fleetpulse-benches --bins
  work=$(mktemp -d)
  sink=
  trap 'if [ -n "$sink" ]; then kill "$sink" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
  # The sink on SERVER_CORE, the load tester on LOAD_CORE: the load tester's CPU is its own.
  # Both at NICE (default -10, as in compare) so that other work on the machine takes the spare time.
  # The kernel groups processes by session (autogroup): nice only orders processes of one session,
  # so each measured process gets a session of its own, and that group gets the nice value too.
  pin() { local core=$1; shift; if [ -n "${NICE--10}" ]; then exec setsid nice -n "${NICE--10}" taskset -c "$core" "$@"; else exec setsid taskset -c "$core" "$@"; fi; }
  autogroup_nice() {
    [ -n "${NICE--10}" ] || return 0
    for _ in $(seq 50); do [ "$(ps -o sid= -p "$1" | tr -d ' ')" = "$1" ] && break; sleep 0.02; done
    echo "${NICE--10}" >"/proc/$1/autogroup" 2>/dev/null || true
  }
  # UDP datagrams the kernel dropped for want of receive buffer (machine-wide: other tests on the
  # machine count too), from before the sink starts to the end.
  udp_drops() { awk '/^Udp:/ && $2 ~ /^[0-9]+$/ {print $6}' /proc/net/snmp; }
  drops0=$(udp_drops)
  pin "${SERVER_CORE:-1}" "$target/load_sink" --tls-dir "$work/tls" >"$work/sink.out" 2>"$work/sink.err" &
  sink=$!
  autogroup_nice $sink
  until grep -q "load_sink listening" "$work/sink.out" 2>/dev/null; do
    kill -0 "$sink" 2>/dev/null || { echo "$0: load_sink exited: $(cat "$work/sink.err")" >&2; exit 1; }
    sleep 0.1
  done
  quic=$(sed 's/.*quic=\([^ ]*\).*/\1/' "$work/sink.out")
  connect_rate=${CONNECT_RATE:-5000}
  warmup=$(python3 -c "print(round($devices / $connect_rate + 2, 1))")
  per_device=$(python3 -c "print($rate / $devices)")
  pin "${LOAD_CORE:-0}" "$target/fleetpulse-loadtest" --sink --quic-addr "$quic" --ca-cert "$work/tls/ca.pem" \
    --no-progress --report "$work/report.json" --devices "$devices" --rate "$per_device" --burst "$burst" \
    --warmup "${warmup}s" --duration "$(python3 -c "print($warmup + $secs + 1)")s" --heartbeat-interval 30 \
    --connect-rate "$connect_rate" --drain-timeout 10s >/dev/null &
  lt=$!
  autogroup_nice $lt
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
  sleep "$(python3 -c "print($warmup + 1)")"
  l0=$(ticks $lt) s0=$(ticks $sink) w0=$(date +%s.%N)
  sleep "$(python3 -c "print($secs - 1)")"
  l1=$(ticks $lt) s1=$(ticks $sink) w1=$(date +%s.%N) lrss=$(rss $lt) srss=$(rss $sink)
  rc=0; wait $lt || rc=$?
  drops=$(( $(udp_drops) - drops0 ))
  # warmup_cpu_ms_per_device: each process's CPU from its start to the end of the warm-up (set-up
  # and heartbeats) per established device: the set-up cost when every device came up in it.
  python3 - "$work/report.json" "$l0" "$l1" "$s0" "$s1" "$w0" "$w1" "$lrss" "$srss" "$(getconf CLK_TCK)" "$rate" "$rc" "$drops" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l0, l1, s0, s1 = (int(x) for x in sys.argv[2:6]); w0, w1 = float(sys.argv[6]), float(sys.argv[7])
lrss, srss, hz, rate, rc = int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10]), float(sys.argv[11]), int(sys.argv[12])
span = w1 - w0; msgs = r["rate_msgs_per_s"] * span; n = r["connections"]["established"]
print(json.dumps({"devices": r["devices"], "established": n, "offered_msgs_per_s": rate,
  "reconnects": r["connections"]["reconnects"], "failed_attempts": r["connections"]["failed_attempts"],
  "udp_rcvbuf_drops": int(sys.argv[13]),
  "warmup_cpu_ms_per_device": {"loadtester": round(l0 / hz * 1e3 / max(n, 1), 3), "sink": round(s0 / hz * 1e3 / max(n, 1), 3)},
  "acked_msgs_per_s": round(r["rate_msgs_per_s"]), "not_sent": r["not_sent"], "errors": r["errors"],
  "loadtester_core_use": round((l1 - l0) / hz / span, 3), "sink_core_use": round((s1 - s0) / hz / span, 3),
  "loadtester_cpu_us_per_msg": round((l1 - l0) / hz * 1e6 / max(msgs, 1), 2),
  "loadtester_rss_kib": lrss, "loadtester_rss_per_device_kib": round(lrss / max(n, 1), 1), "sink_rss_kib": srss,
  "ack_latency_us": r["ack_latency_us"], "setup_rate_per_s": round(r["connections"]["setup_rate_per_s"]),
  "loadtest_exit": rc}))
PY
  exit 0
fi
if [ "${1:-}" = floor-idle ]; then
  [ $# -eq 2 ] || [ $# -eq 3 ] || usage
  devices=$2 secs=${3:-20}
  target="${CARGO_TARGET_DIR:-target}/release"
  [ -x "$target/quic_floor" ] && [ -x "$target/fleetpulse-peerload" ] ||
    cargo build --release -p fleetpulse-loadtest -p fleetpulse-benches --bins
  work=$(mktemp -d)
  server=
  trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
  "$target/quic_floor" --tls-dir "$work/tls" --addr 127.0.0.1:0 >"$work/floor.out" 2>"$work/floor.err" &
  server=$!
  until grep -q "quic_floor listening" "$work/floor.out" 2>/dev/null; do
    kill -0 "$server" 2>/dev/null || { echo "$0: quic_floor exited: $(cat "$work/floor.err")" >&2; exit 1; }
    sleep 0.1
  done
  quic=$(sed 's/.*quic=\([^ ]*\).*/\1/' "$work/floor.out")
  # As `idle`, with the bare quinn server and `fleetpulse-peerload --mode floor`: the cost of a
  # session's set-up and of an idle connection with fleetpulse's work removed.
  peer() { "$target/fleetpulse-peerload" --mode floor --addr "$quic" --ca-cert "$work/tls/ca.pem" \
             --report "$work/report.json" "$@" >/dev/null; }
  idle_run "$devices" "$secs" peer
  exit 0
fi
case "${1:-}" in
throughput) [ $# -eq 5 ] || usage ;;
idle) [ $# -eq 2 ] || [ $# -eq 3 ] || usage ;;
relay-idle | relay-scale) [ $# -eq 3 ] || [ $# -eq 4 ] || usage ;;
relay-flood) [ $# -eq 2 ] || [ $# -eq 3 ] || usage ;;
alarms) [ $# -eq 4 ] || usage ;;
commands) [ $# -eq 3 ] || usage ;;
bulk) [ $# -eq 2 ] || [ $# -eq 3 ] || usage ;;
*) usage ;;
esac
# PROFILE=debug uses the dev build (for quick comparisons between transports only).
target="${CARGO_TARGET_DIR:-target}/${PROFILE:-release}"
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
$([ -n "${SMTP_CONNECTIONS:-}" ] && echo "connections = $SMTP_CONNECTIONS")

[notify]
portal_url = "http://127.0.0.1:8080"
per_receiver_per_minute = 100000
global_per_second = 100000
TOML
  serve_args+=(--config "$work/server.toml")
fi
if [ "${TRANSPORT:-quic}" = https ]; then
  serve_args+=(--ingest-https-addr 127.0.0.1:0)
fi
if [ "$1" = relay-idle ] || [ "$1" = relay-scale ] || [ "$1" = relay-flood ]; then
  # The run's enterprise is the first one created (id 1); the relays are granted it.
  cat >"$work/server.toml" <<TOML
[ingest]
https_listen = "127.0.0.1:0"
[[ingest.relays]]
name = "perf"
credential = "perf-relay-credential-0123"
enterprise_id = 1
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
transport_args=()
if [ "${TRANSPORT:-quic}" = https ] || [ "$1" = relay-idle ] || [ "$1" = relay-scale ] || [ "$1" = relay-flood ]; then
  until grep -q "fleetpulse ingest https=" "$work/out" 2>/dev/null; do sleep 0.1; done
  transport_args=(--transport https --https-addr "$(sed -n 's/^fleetpulse ingest https=//p' "$work/out")")
fi
lt() { "$target/fleetpulse-loadtest" --quic-addr "$quic" --api "http://$http" --ca-cert "$work/data/tls/ca.pem" \
        ${transport_args[@]+"${transport_args[@]}"} --no-progress --report "$work/report.json" "$@" >/dev/null; }
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
  if [ -n "${KNOWN:-}" ]; then
    # A fleet the server already knows (KNOWN=1): the same devices connect once first, in an
    # enterprise made here, and close; the measured run is that fleet connecting again, as after
    # a server restart, with no device to register.
    api() { curl -sf -H 'content-type: application/json' ${token:+-H "authorization: Bearer $token"} \
              -X POST "http://$http/api/v1/$1" -d "$2"; }
    token=$(api auth/login '{"email": "perf@localhost", "password": "perf-password"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
    read -r enterprise credential < <(api enterprises '{"name": "perf-known-fleet"}' |
      python3 -c 'import json, sys; e = json.load(sys.stdin); print(e["id"], e["credential"])')
    rate=${CONNECT_RATE:-0}
    lt --devices "$2" --rate 0 --heartbeat-interval 300 --connect-rate "$rate" --drain-timeout 5s \
      --duration "$(python3 -c "print(round($2 / ($rate or 2000)) + 3)")s" --enterprise-id "$enterprise" --credential "$credential"
    read -r prefix first < <(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["mac_prefix"], r["connections"]["established"])' "$work/report.json")
    [ "$first" = "$2" ] || echo "$0: only $first of $2 devices connected before the measured run" >&2
    sleep 2
    known() { lt --enterprise-id "$enterprise" --credential "$credential" --mac-prefix "$prefix" "$@"; }
    idle_run "$2" "${3:-20}" known
  else
    idle_run "$2" "${3:-20}" lt
  fi
  ;;
alarms)
  devices=$2 alarm_rate=$3 secs=$4
  rc=0
  # Every device connects during a warm-up (WARMUP seconds, default three times the pace's time
  # and at least 3 s) and its alarms start at its end: a device's schedule starts at its
  # connection, so without it the devices connected late (1,000 of them took seconds on a loaded
  # machine) injected a fraction of theirs. "connected_in_s" says whether the warm-up sufficed.
  warmup=${WARMUP:-$(python3 -c "print(max(3.0, round(3 * $devices / 2000, 1)))")}
  lt --devices "$devices" --rate "${RATE:-0}" --warmup "${warmup}s" --duration "$(python3 -c "print($warmup + $secs)")s" \
     --heartbeat-interval 30 --connect-rate 2000 --alarm-rate "$alarm_rate" --smtp-sink "127.0.0.1:$smtp_port" --alarm-drain-timeout "${ALARM_DRAIN_TIMEOUT:-30}s" || rc=$?
  [ -s "$work/report.json" ] || { echo "$0: fleetpulse-loadtest failed (exit $rc)" >&2; exit 1; }
  python3 - "$work/report.json" "$alarm_rate" "$rc" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["connections"]
print(json.dumps({"devices": r["devices"], "alarm_rate": float(sys.argv[2]), "duration_s": round(r["duration_s"], 1),
  "connected_in_s": round(c["established"] / c["setup_rate_per_s"], 2) if c.get("setup_rate_per_s") else None,
  "not_sent": r.get("not_sent"), "alarm_email": r.get("alarm_email"), "alarm_stages": r.get("alarm_stages", []), "verified": r["verified"],
  "loadtest_exit": int(sys.argv[3])}))
PY
  ;;
relay-idle)
  devices=$2 relays=$3 secs=${4:-30}
  https=$(sed -n 's/^fleetpulse ingest https=//p' "$work/out")
  token=$(curl -sf "http://$http/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\": \"$FLEETPULSE_ADMIN_EMAIL\", \"password\": \"$FLEETPULSE_ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  read -r eid cred < <(curl -sf "http://$http/api/v1/enterprises" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"name": "relay-perf"}' | python3 -c 'import json,sys; e=json.load(sys.stdin); print(e["id"], e["credential"])')
  [ "$eid" = 1 ] || { echo "$0: the run's enterprise is $eid, not 1" >&2; exit 1; }
  upstream=${UPSTREAM:-quic} hb=${HEARTBEAT:-300}
  case "$upstream" in quic) upstream_addr=$quic ;; https) upstream_addr=$https ;; *) echo "$0: UPSTREAM=quic|https" >&2; exit 2 ;; esac
  relay_pids=() relay_addrs=()
  for i in $(seq 1 "$relays"); do
    "$target/fleetpulse" relay --upstream "$upstream_addr" --upstream-transport "$upstream" \
      --upstream-ca "$work/data/tls/ca.pem" --listen 127.0.0.1:0 \
      --cert "$work/data/tls/server.pem" --key "$work/data/tls/server.key" --credential perf-relay-credential-0123 \
      --state-dir "$work/relay-$i" >"$work/relay-$i.out" &
    relay_pids+=($!)
    until grep -q "fleetpulse relay listening" "$work/relay-$i.out" 2>/dev/null; do sleep 0.1; done
    relay_addrs+=("$(sed -n 's/^fleetpulse relay listening quic=//p' "$work/relay-$i.out")")
  done
  trap 'kill "${relay_pids[@]}" 2>/dev/null || true; if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
  relay_rss() { local t=0; for p in "${relay_pids[@]}"; do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
  sleep 1; r0=$(rss_kib); q0=$(relay_rss); t0=$(cpu_ticks)
  lt_pids=()
  for i in $(seq 0 $((relays - 1))); do
    "$target/fleetpulse-loadtest" --quic-addr "${relay_addrs[$i]}" --api "http://$http" --ca-cert "$work/data/tls/ca.pem" \
      --enterprise-id "$eid" --credential "$cred" --no-progress --report "$work/report-$i.json" \
      --devices $((devices / relays)) --rate 0 --duration "${secs}s" --heartbeat-interval "$hb" \
      --connect-rate "${CONNECT_RATE:-2000}" --drain-timeout 5s >/dev/null &
    lt_pids+=($!)
  done
  metric() { curl -sf "http://$http/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {printf "%d", s}'; }
  beats() { metric 'fleetpulse_ingest_frames_received_total[{]kind="heartbeat"'; }
  # The idle window starts once every device is in (each relay's load tester connects its share
  # at CONNECT_RATE), plus 2 s.
  known() { metric fleetpulse_devices_known; }
  start=$(date +%s)
  until [ "$(known)" -ge "$devices" ] || [ $(($(date +%s) - start)) -ge $((secs - 6)) ]; do sleep 1; done
  sleep 2; ta=$(cpu_ticks); ha=$(beats); wa=$(date +%s.%N)
  rest=$((start + secs - 2 - $(date +%s))); if [ "$rest" -gt 0 ]; then sleep "$rest"; fi
  r1=$(rss_kib); q1=$(relay_rss); t1=$(cpu_ticks); h1=$(beats); w1=$(date +%s.%N)
  wait "${lt_pids[@]}" || true
  python3 - "$work" "$relays" "$upstream" "$r0" "$r1" "$q0" "$q1" "$t0" "$t1" "$hz" "$ta" "$ha" "$h1" "$wa" "$w1" <<'PY'
import json, sys
work, relays, upstream = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r0, r1, q0, q1, t0, t1, hz, ta, ha, h1 = map(int, sys.argv[4:14]); wa, w1 = map(float, sys.argv[14:16])
reports = [json.load(open(f"{work}/report-{i}.json")) for i in range(relays)]
n = sum(r["connections"]["established"] for r in reports)
print(json.dumps({"upstream": upstream, "devices": n, "relays": relays, "server_rss_before_kib": r0,
  "server_rss_connected_kib": r1, "server_rss_per_device_bytes": round((r1 - r0) * 1024 / max(n, 1)),
  "relay_rss_total_kib": q1, "relay_rss_per_device_kib": round((q1 - q0) / max(n, 1), 1),
  "server_cpu_s_total": (t1 - t0) / hz, "idle_window_s": round(w1 - wa, 1), "heartbeats_in_window": h1 - ha,
  "server_cpu_s_in_window": (t1 - ta) / hz,
  "server_cpu_us_per_heartbeat": round((t1 - ta) / hz * 1e6 / max(h1 - ha, 1), 1) if h1 > ha else None,
  "verified": [r["verified"] for r in reports]}))
PY
  ;;
relay-flood)
  devices=$2 secs=${3:-20}
  https=$(sed -n 's/^fleetpulse ingest https=//p' "$work/out")
  token=$(curl -sf "http://$http/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\": \"$FLEETPULSE_ADMIN_EMAIL\", \"password\": \"$FLEETPULSE_ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  read -r eid cred < <(curl -sf "http://$http/api/v1/enterprises" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"name": "relay-flood"}' | python3 -c 'import json,sys; e=json.load(sys.stdin); print(e["id"], e["credential"])')
  [ "$eid" = 1 ] || { echo "$0: the run's enterprise is $eid, not 1" >&2; exit 1; }
  "$target/fleetpulse" relay --upstream "$https" --upstream-ca "$work/data/tls/ca.pem" --listen 127.0.0.1:0 \
    --cert "$work/data/tls/server.pem" --key "$work/data/tls/server.key" --credential perf-relay-credential-0123 \
    --state-dir "$work/relay" >"$work/relay.out" &
  relay_pid=$!
  trap 'kill "$relay_pid" 2>/dev/null || true; if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
  until grep -q "fleetpulse relay listening" "$work/relay.out" 2>/dev/null; do sleep 0.1; done
  relay_addr=$(sed -n 's/^fleetpulse relay listening quic=//p' "$work/relay.out")
  rlt() { "$target/fleetpulse-loadtest" --quic-addr "$relay_addr" --api "http://$http" --ca-cert "$work/data/tls/ca.pem" \
    --enterprise-id "$eid" --credential "$cred" --no-progress --heartbeat-interval 30 --drain-timeout 30s "$@" >/dev/null; }
  # Calm alone, then calm beside a flooder (one device offering 20,000 frames/s in bursts of 100).
  rlt --devices "$devices" --rate 5 --duration "${secs}s" --warmup 3s --report "$work/calm.json"
  rlt --devices 1 --rate 20000 --burst 100 --duration "$((secs + 6))s" --report "$work/flooder.json" &
  flood_pid=$!
  sleep 2
  rlt --devices "$devices" --rate 5 --duration "${secs}s" --warmup 3s --report "$work/mixed.json"
  wait $flood_pid || true
  limited=$(curl -sf "http://$http/metrics" | awk '/^fleetpulse_ingest_rate_limited_total[{]scope="device"/ {print $2}')
  python3 - "$work" "${limited:-0}" <<'PY'
import json, sys
work, limited = sys.argv[1], float(sys.argv[2])
calm, mixed, flood = (json.load(open(f"{work}/{n}.json")) for n in ("calm", "mixed", "flooder"))
p = lambda r: r["ack_latency_us"]["p99"]
print(json.dumps({"calm_devices": calm["devices"], "calm_p99_us": p(calm), "beside_flooder_p99_us": p(mixed),
  "p99_ratio": round(p(mixed) / max(p(calm), 1), 2), "calm_p50_us": calm["ack_latency_us"]["p50"],
  "beside_flooder_p50_us": mixed["ack_latency_us"]["p50"],
  "flooder_offered": flood["sent"] + flood["not_sent"], "flooder_acked": flood["acked"],
  "flooder_acked_per_s": round(flood["rate_msgs_per_s"]), "device_rate_limit_hits": limited,
  "verified": [calm["verified"], mixed["verified"], flood["verified"]]}))
PY
  ;;
relay-scale)
  devices=$2 relays=$3 secs=${4:-120} hb=${HEARTBEAT:-300}
  https=$(sed -n 's/^fleetpulse ingest https=//p' "$work/out")
  token=$(curl -sf "http://$http/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\": \"$FLEETPULSE_ADMIN_EMAIL\", \"password\": \"$FLEETPULSE_ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  read -r eid cred < <(curl -sf "http://$http/api/v1/enterprises" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"name": "relay-scale"}' | python3 -c 'import json,sys; e=json.load(sys.stdin); print(e["id"], e["credential"])')
  [ "$eid" = 1 ] || { echo "$0: the run's enterprise is $eid, not 1" >&2; exit 1; }
  sleep 1; r0=$(rss_kib)
  FLEETPULSE_RELAY_CREDENTIAL=perf-relay-credential-0123 "$target/fleetpulse-loadtest" --transport relayed \
    --https-addr "$https" --relays "$relays" --quic-addr "$quic" --api "http://$http" --ca-cert "$work/data/tls/ca.pem" \
    --enterprise-id "$eid" --credential "$cred" --no-progress --report "$work/report.json" --devices "$devices" \
    --rate 0 --duration "${secs}s" --heartbeat-interval "$hb" --connect-rate "${CONNECT_RATE:-5000}" \
    --drain-timeout 10s >"$work/lt.out" 2>&1 &
  lt_pid=$!
  metric() { curl -sf "http://$http/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {printf "%d", s}'; }
  : >"$work/samples"
  for _ in $(seq 1 $((secs / 5 - 1))); do
    sleep 5
    printf '%s %s %s %s %s %s\n' "$(date +%s.%N)" "$(rss_kib)" "$(metric fleetpulse_devices_known)" "$(cpu_ticks)" \
      "$(metric 'fleetpulse_ingest_frames_received_total[{]kind="heartbeat"')" \
      "$(awk '/VmRSS/ {print $2}' "/proc/$lt_pid/status" 2>/dev/null || echo 0)" >>"$work/samples"
  done
  wait $lt_pid || true
  python3 - "$work" "$r0" "$hz" "$devices" <<'PY'
import json, sys
work, r0, hz, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [list(map(float, l.split())) for l in open(f"{work}/samples") if l.strip()]
r = json.load(open(f"{work}/report.json"))
n = max(int(x[2]) for x in rows)
# The idle phase: every device in and the load tester still running (a sample taken after it
# ended sees the server taking the devices through their disconnects, not holding them idle).
full = [x for x in rows if x[2] >= n and x[5] > 0] or [x for x in rows if x[2] >= n]
half = min((x for x in rows if x[2] >= n / 2), key=lambda x: x[0])
idle = sorted(x[1] for x in full)[len(full) // 2]   # median RSS of the idle phase, KiB
out = {"devices": n, "relays": r.get("connections", {}), "server_rss_before_kib": r0, "server_rss_idle_median_kib": int(idle),
  "server_rss_end_kib": int(rows[-1][1]),
  "server_rss_per_device_bytes": round((idle - r0) * 1024 / max(n, 1)),
  "server_rss_marginal_bytes_per_device": round((idle - half[1]) * 1024 / max(n - half[2], 1)),
  "loadtester_rss_kib": int(max(x[5] for x in rows)),
  "verified": r["verified"], "errors": r["errors"]}
if len(full) >= 2:
    a, b = full[0], full[-1]
    beats = b[4] - a[4]
    out["idle_window_s"] = round(b[0] - a[0], 1)
    out["heartbeats_in_window"] = int(beats)
    out["server_cpu_us_per_heartbeat"] = round((b[3] - a[3]) / hz * 1e6 / max(beats, 1), 1)
print(json.dumps(out))
print("samples (t, rss_kib, known, cpu_ticks, heartbeats, loadtester_rss_kib):", file=sys.stderr)
for x in rows: print(" ".join(str(int(v)) for v in x), file=sys.stderr)
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
