#!/usr/bin/env bash
# MQTT load benchmark: our ThingsBoard-dialect endpoint against Mosquitto relaying the same
# chunks, on loopback.
#
# Starts `ota-load serve` (the OTA service on SQLite + local blobs in a temporary directory,
# serving `ota_mqtt::serve`; one image of BENCH_SIZE bytes assigned to devices load-0 …) and a
# private Mosquitto (temporary config on a free port, anonymous, unlimited in-flight and queued
# messages), both freshly started, then:
#   1. memory per idle device, for each N in BENCH_IDLE on freshly started servers: reads
#      VmRSS of each server from /proc, connects N idle devices (`ota-load idle`: CONNECT +
#      the subscriptions a device makes), reads VmRSS again and prints (after - before) / N;
#      with two or more counts, also the marginal cost per device between the smallest and
#      the largest (the one-time growth of a fresh start cancels out);
#   2. for each N in BENCH_DEVICES: `ota-load run` — N devices, each its own MQTT connection
#      running the real Updater, update from our endpoint (chunk request → chunk answer per
#      session); then `ota-load run --relay` — the same N devices fetch the same image in the
#      same chunk size at QoS 1 through Mosquitto, answered by publisher connections of the
#      load generator on per-device topics. Prints both RESULT lines and the MiB/s ratio.
#
# Run by hand (not part of CI). Everything stays on 127.0.0.1; processes and temporary files
# are removed on exit. Environment: BENCH_DEVICES (default "1000 10000"), BENCH_IDLE (default
# "1000 10000"), BENCH_SIZE (default 262144), BENCH_CHUNK (default 4096), BENCH_PUBLISHERS (relay
# publisher connections, default 2), BENCH_RAMP (connections per second, default 2000),
# BENCH_PROFILE (cargo profile, default release).
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
devices_list="${BENCH_DEVICES:-1000 10000}"
idle_list="${BENCH_IDLE:-1000 10000}"
size="${BENCH_SIZE:-262144}"
chunk="${BENCH_CHUNK:-4096}"
publishers="${BENCH_PUBLISHERS:-2}"
ramp="${BENCH_RAMP:-2000}"
profile="${BENCH_PROFILE:-release}"

# Every device is a socket on both ends: raise the descriptor limit as far as allowed.
hard="$(ulimit -Hn)"
if [[ "$hard" == unlimited ]]; then hard=1048576; fi
ulimit -n "$((hard < 1048576 ? hard : 1048576))"
echo "== ulimit -n $(ulimit -n)"

if ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]]; then
    echo "== installing mosquitto"
    apt-get install -y -q mosquitto >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q mosquitto >/dev/null; }
fi
mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

echo "== building ota-load ($profile)"
cargo build --quiet --profile "$profile" -p ota-load
case "$profile" in
    dev) dir=debug ;;
    *) dir="$profile" ;;
esac
load="$target/$dir/ota-load"

work="$(mktemp -d "${TMPDIR:-/tmp}/ota-bench-mqtt.XXXXXX")"
pids=()
cleanup() {
    exec 7>&- 2>/dev/null || true
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

max_devices=0
for n in $devices_list $idle_list; do ((n > max_devices)) && max_devices="$n"; done

# Starts a fresh `ota-load serve` (SQLite database of max_devices devices, one image) and a
# fresh Mosquitto; sets ours_addr, ours_pid, mosq_addr, mosq_pid.
start_servers() {
    echo "== starting ota-load serve ($max_devices devices, image $size bytes)"
    rm -rf "$work/ours" && mkdir -p "$work/ours"
    "$load" serve --data-dir "$work/ours" --devices "$max_devices" --size "$size" >"$work/ours.out" &
    pids+=("$!")
    for _ in $(seq 1200); do
        grep -q '^READY' "$work/ours.out" 2>/dev/null && break
        kill -0 "${pids[-1]}" 2>/dev/null || { echo "ota-load serve exited"; exit 1; }
        sleep 0.1
    done
    local ready
    ready="$(grep '^READY' "$work/ours.out")" || { echo "ota-load serve not ready"; exit 1; }
    ours_addr="$(sed -E 's/.*mqtt=([^ ]+).*/\1/' <<<"$ready")"
    ours_pid="$(sed -E 's/.*pid=([0-9]+).*/\1/' <<<"$ready")"
    echo "   $ready"

    local mosq_port
    mosq_port="$(free_port)"
    cat >"$work/mosquitto.conf" <<EOF
listener $mosq_port 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 0
max_connections -1
log_dest none
EOF
    echo "== starting mosquitto on 127.0.0.1:$mosq_port ($("$mosquitto_bin" -h 2>/dev/null | head -1 || true))"
    "$mosquitto_bin" -c "$work/mosquitto.conf" &
    mosq_pid="$!"
    pids+=("$mosq_pid")
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$mosq_port") 2>/dev/null && break
        sleep 0.1
    done
    mosq_addr="127.0.0.1:$mosq_port"
}

stop_servers() {
    for pid in "$ours_pid" "$mosq_pid"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# Memory per idle device, on freshly started servers.
idle_rss() { # name pid addr n [--relay]
    local name="$1" pid="$2" addr="$3" n="$4"
    shift 4
    rm -f "$work/idle.fifo" "$work/idle.out"
    mkfifo "$work/idle.fifo"
    sleep 1
    local before after
    before="$(rss_kib "$pid")"
    "$load" idle --server "$addr" --devices "$n" --ramp "$ramp" "$@" <"$work/idle.fifo" >"$work/idle.out" &
    local idle_pid="$!"
    pids+=("$idle_pid")
    exec 7>"$work/idle.fifo"
    for _ in $(seq 1200); do
        grep -q '^IDLE' "$work/idle.out" 2>/dev/null && break
        kill -0 "$idle_pid" 2>/dev/null || { echo "idle devices failed"; exit 1; }
        sleep 0.1
    done
    sleep 2
    after="$(rss_kib "$pid")"
    exec 7>&-
    wait "$idle_pid" || true
    awk -v s="$name" -v b="$before" -v a="$after" -v d="$n" \
        'BEGIN { printf "IDLE-RSS server=%s devices=%d before_kib=%d after_kib=%d per_device_kib=%.2f\n", s, d, b, a, (a - b) / d }'
}

per() { sed -E 's/.*per_device_kib=([0-9.]+).*/\1/' <<<"$1"; }
growth() { sed -E 's/.*before_kib=([0-9]+) after_kib=([0-9]+).*/\1 \2/' <<<"$1" | awk '{ print $2 - $1 }'; }
declare -A grown
for n in $idle_list; do
    start_servers
    echo "== memory per idle device ($n devices, fresh servers)"
    ours_idle="$(idle_rss ours "$ours_pid" "$ours_addr" "$n")"
    echo "$ours_idle"
    mosq_idle="$(idle_rss mosquitto "$mosq_pid" "$mosq_addr" "$n" --relay)"
    echo "$mosq_idle"
    awk -v o="$(per "$ours_idle")" -v m="$(per "$mosq_idle")" -v n="$n" \
        'BEGIN { if (m > 0) printf "IDLE-RSS devices=%d ratio ours/mosquitto = %.2f\n", n, o / m }'
    grown[ours,$n]="$(growth "$ours_idle")"
    grown[mosquitto,$n]="$(growth "$mosq_idle")"
    stop_servers
done
# The marginal cost of one more idle device between the smallest and the largest count: the
# one-time growth of a fresh start (SQLite page caches, lookup tables, arenas) cancels out.
read -r -a counts <<<"$idle_list"
if ((${#counts[@]} > 1)); then
    lo="${counts[0]}" hi="${counts[-1]}"
    for name in ours mosquitto; do
        awk -v s="$name" -v a="${grown[$name,$lo]}" -v b="${grown[$name,$hi]}" -v lo="$lo" -v hi="$hi" \
            'BEGIN { printf "IDLE-RSS marginal server=%s devices=%d..%d per_device_kib=%.2f\n", s, lo, hi, (b - a) / (hi - lo) }'
    done
fi

start_servers
mib() { sed -E 's/.*mib_per_s=([0-9.]+).*/\1/' <<<"$1"; }
for n in $devices_list; do
    echo "== $n devices × $size bytes, chunk $chunk"
    ours="$("$load" run --server "$ours_addr" --devices "$n" --chunk "$chunk" --size "$size" --ramp "$ramp" | grep '^RESULT')" || true
    echo "${ours:-RESULT mode=ours failed}"
    relay="$("$load" run --relay --server "$mosq_addr" --devices "$n" --chunk "$chunk" --size "$size" \
        --publishers "$publishers" --ramp "$ramp" | grep '^RESULT')" || true
    echo "${relay:-RESULT mode=relay failed}"
    if [[ -n "$ours" && -n "$relay" ]]; then
        awk -v o="$(mib "$ours")" -v m="$(mib "$relay")" -v n="$n" \
            'BEGIN { if (m > 0) printf "RATIO devices=%d MiB/s ours/mosquitto-relay = %.2f\n", n, o / m }'
    fi
done
