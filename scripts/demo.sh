#!/usr/bin/env bash
# The main job: builds the demo server and device, starts the server (SQLite + local blobs in a
# temporary directory, HTTP, CoAP and MQTT on loopback; it creates the product's keys and uploads
# signed, encrypted firmware), then updates one device each over HTTP, CoAP and MQTT from 1.0.0 to
# 1.1.0, cuts another device's power mid-download and runs it again (it resumes from its checkpoint), shows a fourth device
# rolling back an image whose self-test fails and a fifth refusing a package signed by a key it
# does not trust. Exits non-zero unless every device ends as expected and the server records it.
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target/debug"
deadline_s="${DEMO_DEADLINE_S:-60}"

echo "== building"
cargo build --quiet -p ota-demo-server -p ota-demo-device

work="$(mktemp -d "${TMPDIR:-/tmp}/ota-demo.XXXXXX")"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkfifo "$work/server.out"
"$bin/ota-demo-server" --data-dir "$work/data" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
exec 3<"$work/server.out"
touch "$work/server.log"

# Reads the server's lines until one matches the pattern, or fails at the deadline.
wait_for() {
    local pattern="$1" line end=$((SECONDS + deadline_s))
    while ((SECONDS < end)); do
        if ! IFS= read -r -t "$((end - SECONDS))" line <&3; then
            break
        fi
        echo "$line" >>"$work/server.log"
        echo "  server | $line"
        if [[ "$line" =~ $pattern ]]; then
            return 0
        fi
    done
    echo "demo: no server line matching '$pattern' within ${deadline_s}s" >&2
    cat "$work/server.err" >&2
    return 1
}

started_ms=$(($(date +%s%N) / 1000000))
echo "== starting ota-demo-server"
wait_for '^READY '
ready="$(grep '^READY ' "$work/server.log")"
http="$(sed -E 's/.* http=([^ ]+).*/\1/' <<<"$ready")"
coap="$(sed -E 's/.* coap=([^ ]+).*/\1/' <<<"$ready")"
mqtt="$(sed -E 's/.* mqtt=([^ ]+).*/\1/' <<<"$ready")"
keys="$(sed -E 's/.* keys=([^ ]+).*/\1/' <<<"$ready")"

# Runs one device; $1 = label (names its flash file), $2 = expected exit code, rest = device
# arguments. Its output goes to $work/<label>.out (appended: a label may run more than once).
run_device() {
    local label="$1" want="$2" rc=0
    shift 2
    echo "== device $label: ota-demo-device $*"
    timeout "$deadline_s" "$bin/ota-demo-device" "$@" --keys "$keys" --flash "$work/$label.flash" \
        | tee -a "$work/$label.out" | sed "s/^/  $label | /" || rc=${PIPESTATUS[0]}
    if [[ "$rc" != "$want" ]]; then
        echo "demo: device $label exited with $rc, expected $want" >&2
        return 1
    fi
}

run_device http 0 --http "http://$http" --token demo-http-1
wait_for '^STATE token=demo-http-1 fw_state=UPDATED current=1\.1\.0'
run_device coap 0 --coap "$coap" --token demo-coap-1
wait_for '^STATE token=demo-coap-1 fw_state=UPDATED current=1\.1\.0'
run_device mqtt 0 --mqtt "$mqtt" --token demo-mqtt-1
wait_for '^STATE token=demo-mqtt-1 fw_state=UPDATED current=1\.1\.0'
# Power cut at the 40th flash operation (a quarter into the download), then power on again: the
# download resumes from the last checkpoint.
run_device cut 4 --http "http://$http" --token demo-cut-1 --cut-at 40
run_device cut 0 --http "http://$http" --token demo-cut-1
wait_for '^STATE token=demo-cut-1 fw_state=UPDATED current=1\.1\.0'
run_device fail 3 --http "http://$http" --token demo-fail-1
wait_for '^STATE token=demo-fail-1 fw_state=FAILED'
run_device rogue 2 --coap "$coap" --token demo-rogue-1
wait_for '^STATE token=demo-rogue-1 fw_state=FAILED'

kill "$server_pid"
wait "$server_pid" || true
cat <&3 >>"$work/server.log"
server_pid=""
total_ms=$(($(date +%s%N) / 1000000 - started_ms))

status=0
for label in http coap mqtt; do
    grep -q '^RESULT version=1\.1\.0 ' "$work/$label.out" || status=1
done
grep -q '^RESULT power_cut_at=40 ' "$work/cut.out" || status=1
grep -q '^RESULT version=1\.1\.0 ' "$work/cut.out" || status=1
grep -q '^RESULT version=1\.0\.0 .*rolled_back=1\.2\.0' "$work/fail.out" || status=1
grep -q '^RESULT version=1\.0\.0 .*rejected=1\.3\.0 error=SIGNATURE_INVALID' "$work/rogue.out" || status=1

echo "== summary"
for label in http coap mqtt cut fail rogue; do
    grep '^RESULT ' "$work/$label.out" | sed "s/^/device $label: /" || echo "device $label: no result"
done
grep -E '^STATE token=[^ ]+ fw_state=(UPDATED|FAILED)' "$work/server.log" | sed 's/^/server: /'
if ((status == 0)); then
    echo "demo: OK, HTTP, CoAP, MQTT and power-cut devices run 1.1.0 read from their booted slot (signed, encrypted, verified), the failing image was rolled back, the untrusted package refused, ${total_ms} ms"
else
    echo "demo: FAILED" >&2
fi
exit "$status"
