#!/usr/bin/env bash
# CoAP download benchmark: our CoAP device API (/fw/{token}, Block2) against libcoap's example
# server, both serving the same 256 KiB image on loopback.
#
# libcoap's server has no file option: it is started as `coap-server-notls -d 10` (dynamic
# resources) and the image is PUT into it with `coap-client-notls -m put -b 1024`. Then batches
# of 1, 8 and 32 parallel `coap-client-notls -m get -b 1024` downloads run against it and against
# `ota-bench-server` (release build); each batch is timed wall-clock from the first client's
# start to the last one's exit, every downloaded file is compared with the image, and the
# script prints KiB/s (all bytes of the batch / batch time) and the ratio ours/libcoap.
# Each batch runs BENCH_REPEAT times (default 3) per server, alternating servers; the median
# time is reported.
#
# Run by hand (not part of .ci/run). Everything stays on 127.0.0.1; processes and temporary
# files are removed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
batches="${BENCH_BATCHES:-1 8 32}"
repeat="${BENCH_REPEAT:-3}"
block=1024
deadline_s=60

if ! command -v coap-client-notls >/dev/null || ! command -v coap-server-notls >/dev/null; then
    echo "== installing libcoap3-bin"
    apt-get install -y -q libcoap3-bin >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q libcoap3-bin >/dev/null; }
fi

echo "== building ota-bench-server (release)"
cargo build --quiet --release -p ota-bench
server_bin="$target/release/ota-bench-server"

work="$(mktemp -d "${TMPDIR:-/tmp}/ota-bench-coap.XXXXXX")"
server_pid=""
libcoap_pid=""
cleanup() {
    for pid in "$server_pid" "$libcoap_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_udp_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- our server
mkdir -p "$work/data"
"$server_bin" --data-dir "$work/data" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
end=$((SECONDS + deadline_s))
until grep -q '^READY ' "$work/server.out" 2>/dev/null; do
    if ((SECONDS >= end)) || ! kill -0 "$server_pid" 2>/dev/null; then
        echo "bench-coap: ota-bench-server not ready within ${deadline_s}s" >&2
        cat "$work/server.err" >&2
        exit 1
    fi
    sleep 0.1
done
ready="$(grep '^READY ' "$work/server.out")"
field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$ready"; }
ours="coap://$(field coap)/fw/$(field coap_token)"
image="$(field coap_image)"
size=$(stat -c %s "$image")

# --- libcoap's server with the image PUT into a dynamic resource
port="$(free_udp_port)"
coap-server-notls -A 127.0.0.1 -p "$port" -d 10 >"$work/libcoap.log" 2>&1 &
libcoap_pid=$!
libcoap="coap://127.0.0.1:$port/fw"
end=$((SECONDS + deadline_s))
until coap-client-notls -m put -b "$block" -B 2 -f "$image" "$libcoap" >/dev/null 2>&1 &&
    coap-client-notls -m get -b "$block" -B 5 -o "$work/check.bin" "$libcoap" >/dev/null 2>&1 &&
    cmp -s "$image" "$work/check.bin"; do
    if ((SECONDS >= end)) || ! kill -0 "$libcoap_pid" 2>/dev/null; then
        echo "bench-coap: could not PUT the image into coap-server-notls within ${deadline_s}s" >&2
        cat "$work/libcoap.log" >&2
        exit 1
    fi
    sleep 0.1
done

# batch URI N -> prints the wall-clock seconds of N parallel downloads; fails unless every
# download is byte-identical to the image.
batch() {
    local uri="$1" n="$2" i start stop pids=() failed=0
    rm -f "$work"/got.*
    start=$(date +%s%N)
    for ((i = 0; i < n; i++)); do
        coap-client-notls -m get -b "$block" -B 30 -o "$work/got.$i" "$uri" >/dev/null 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || failed=1; done
    stop=$(date +%s%N)
    for ((i = 0; i < n; i++)); do
        cmp -s "$image" "$work/got.$i" || failed=1
    done
    if ((failed)); then
        echo "bench-coap: a download of $uri in a batch of $n failed or differs from the image" >&2
        return 1
    fi
    awk -v ns=$((stop - start)) 'BEGIN { printf "%.4f\n", ns / 1e9 }'
}

median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "== $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== image ${size} bytes, block size $block, median of $repeat runs per batch"
echo "   ours   : $ours"
echo "   libcoap: $libcoap (coap-server-notls -d 10, image PUT with -b $block)"
# Warm-up: one download from each.
batch "$ours" 1 >/dev/null
batch "$libcoap" 1 >/dev/null

printf '%-8s %8s %10s %10s %10s\n' server clients 'bytes' 'median s' 'KiB/s'
declare -A kibs
for n in $batches; do
    t_ours="" t_lib=""
    for ((r = 0; r < repeat; r++)); do
        t_ours+="$(batch "$ours" "$n") "
        t_lib+="$(batch "$libcoap" "$n") "
    done
    for s in ours libcoap; do
        if [[ $s == ours ]]; then times="$t_ours"; else times="$t_lib"; fi
        m="$(median <<<"${times% }")"
        kibs[$s-$n]="$(awk -v b=$((n * size)) -v t="$m" 'BEGIN { printf "%.0f", b / 1024 / t }')"
        printf '%-8s %8s %10s %10s %10s   (runs: %s)\n' "$s" "$n" $((n * size)) "$m" "${kibs[$s-$n]}" "${times% }"
    done
done

echo "== ratio ours/libcoap (KiB/s; goal >= 1.0)"
for n in $batches; do
    awk -v n="$n" -v a="${kibs[ours-$n]}" -v b="${kibs[libcoap-$n]}" \
        'BEGIN { printf "clients=%-3s %.2fx\n", n, a / b }'
done
