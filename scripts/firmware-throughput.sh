#!/bin/sh
# Upload and HTTPS download throughput of a 64 MiB firmware image through fleetpulse serve
# (docs/PERFORMANCE.md, "Firmware upload and download"); needs curl and jq. BIN picks the binary.
set -eu
mkdir -p "${TMPDIR:-/tmp}/fleetpulse-fw-perf"
BIN=${BIN:-/var/tmp/fleetpulse-target/debug/fleetpulse}
D=$(mktemp -d ${TMPDIR:-/tmp}/fleetpulse-fw-perf/data.XXXX)
head -c 67108864 /dev/urandom > ${TMPDIR:-/tmp}/fleetpulse-fw-perf/fw64.bin
FLEETPULSE_ADMIN_EMAIL=admin@example.com FLEETPULSE_ADMIN_PASSWORD=correct-horse-battery FLEETPULSE_LOG=warn \
  "$BIN" serve --data-dir "$D" --quic-addr 127.0.0.1:0 --http-addr 127.0.0.1:18080 --firmware-addr 127.0.0.1:18444 \
  > ${TMPDIR:-/tmp}/fleetpulse-fw-perf/server.log 2>&1 &
PID=$!
trap 'kill $PID' EXIT
for i in $(seq 1 100); do curl -sf http://127.0.0.1:18080/readyz >/dev/null && break; sleep 0.2; done
FP=http://127.0.0.1:18080
TOKEN=$(curl -s -X POST $FP/api/v1/auth/login -H 'Content-Type: application/json' \
  -d '{"email":"admin@example.com","password":"correct-horse-battery"}' | jq -r .token)
E=$(curl -s -X POST $FP/api/v1/enterprises -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"name":"perf"}' | jq -r .id)
DEV=$(curl -s -X POST $FP/api/v1/devices -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d "{\"enterprise_id\":$E,\"mac\":\"001565ff0001\",\"model\":\"T54W\"}" | jq -r .id)
for n in 1 2 3; do
  curl -s -o ${TMPDIR:-/tmp}/fleetpulse-fw-perf/up.json -w "upload   %{size_upload} bytes in %{time_total} s = %{speed_upload} B/s\n" \
    -X POST "$FP/api/v1/firmware?enterprise_id=$E&model=T54W&version=perf$n" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/octet-stream' --data-binary @${TMPDIR:-/tmp}/fleetpulse-fw-perf/fw64.bin
done
IMG=$(jq -r .id ${TMPDIR:-/tmp}/fleetpulse-fw-perf/up.json)
URL=$(curl -s -X POST $FP/api/v1/devices/$DEV/firmware-upgrade -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d "{\"image\":$IMG}" | jq -r .args.url)
for n in 1 2 3; do
  curl -s --cacert "$D/tls/ca.pem" -o ${TMPDIR:-/tmp}/fleetpulse-fw-perf/down.bin -w "download %{size_download} bytes in %{time_total} s = %{speed_download} B/s\n" "$URL"
done
cmp ${TMPDIR:-/tmp}/fleetpulse-fw-perf/down.bin ${TMPDIR:-/tmp}/fleetpulse-fw-perf/fw64.bin && echo "download identical"
rm -rf "$D" ${TMPDIR:-/tmp}/fleetpulse-fw-perf/down.bin ${TMPDIR:-/tmp}/fleetpulse-fw-perf/fw64.bin
