#!/usr/bin/env bash
# HTTP load benchmark: our device API against nginx serving the same 1 MiB file, on loopback.
#
# Starts `ota-bench-server` (release build; SQLite + local blobs in a temporary directory) and
# nginx (2 workers, sendfile on, a temporary prefix and config on a free port), then runs
# `wrk -t2 --latency` at 64 and 256 connections with a Lua script that cycles through the
# image's 4 KiB chunks:
#   ours-chunk  GET /api/v1/{token}/firmware?title=…&version=…&size=4096&chunk=N  (ThingsBoard path)
#   ours-range  GET /api/v1/{token}/firmware/download with Range: bytes=…         (standard path)
#   nginx-range GET /http.bin with the same Range requests
# and prints req/s, p50/p99 latency, the ratio ours/nginx, and the server's CPU (utime+stime of
# our process, or of nginx's master and workers, sampled from /proc before and after each run):
# its utilisation (% of one core) and CPU time per request.
#
# Run by hand (not part of .ci/run). Everything stays on 127.0.0.1; processes and temporary
# files are removed on exit. Environment: BENCH_DURATION (wrk -d, default 10s),
# BENCH_CONNECTIONS (default "64 256"), BENCH_WARMUP (default 2s).
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
duration="${BENCH_DURATION:-10s}"
connections="${BENCH_CONNECTIONS:-64 256}"
warmup="${BENCH_WARMUP:-2s}"
chunk=4096
deadline_s=60

need=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then
    echo "== installing ${need[*]}"
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

echo "== building ota-bench-server (release)"
cargo build --quiet --release -p ota-bench
server_bin="$target/release/ota-bench-server"

work="$(mktemp -d "${TMPDIR:-/tmp}/ota-bench-http.XXXXXX")"
server_pid=""
nginx_pid=""
cleanup() {
    for pid in "$server_pid" "$nginx_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
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

# --- our server
mkdir -p "$work/data"
"$server_bin" --data-dir "$work/data" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
end=$((SECONDS + deadline_s))
until grep -q '^READY ' "$work/server.out" 2>/dev/null; do
    if ((SECONDS >= end)) || ! kill -0 "$server_pid" 2>/dev/null; then
        echo "bench-http: ota-bench-server not ready within ${deadline_s}s" >&2
        cat "$work/server.err" >&2
        exit 1
    fi
    sleep 0.1
done
ready="$(grep '^READY ' "$work/server.out")"
field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$ready"; }
http="$(field http)"
token="$(field http_token)"
title="$(field title)"
version="$(field http_version)"
image="$(field http_image)"
size=$(stat -c %s "$image")
chunks=$(((size + chunk - 1) / chunk))

# --- nginx: 2 workers, sendfile, the same file
port="$(free_port)"
mkdir -p "$work/nginx/www" "$work/nginx/tmp"
cp "$image" "$work/nginx/www/http.bin"
chmod -R a+rX "$work"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    types { application/octet-stream bin; }
    server {
        listen 127.0.0.1:$port;
        root $work/nginx/www;
        location / { }
    }
}
EOF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
end=$((SECONDS + deadline_s))
until curl -sf -o /dev/null "http://127.0.0.1:$port/http.bin"; do
    if ((SECONDS >= end)) || ! kill -0 "$nginx_pid" 2>/dev/null; then
        echo "bench-http: nginx not serving within ${deadline_s}s" >&2
        cat "$work/nginx/error.log" >&2
        exit 1
    fi
    sleep 0.1
done

ours_chunk="http://$http/api/v1/$token/firmware?title=$title&version=$version&size=$chunk"
ours_range="http://$http/api/v1/$token/firmware/download"
nginx_range="http://127.0.0.1:$port/http.bin"

# --- every target answers the last chunk byte-identically before load
last=$((chunks - 1))
dd if="$image" of="$work/expect.bin" bs="$chunk" skip="$last" count=1 status=none
range="bytes=$((last * chunk))-$((last * chunk + chunk - 1))"
curl -sf -o "$work/got1.bin" "$ours_chunk&chunk=$last"
curl -sf -H "Range: $range" -o "$work/got2.bin" "$ours_range"
curl -sf -H "Range: $range" -o "$work/got3.bin" "$nginx_range"
for f in got1 got2 got3; do
    cmp -s "$work/expect.bin" "$work/$f.bin" || {
        echo "bench-http: $f differs from chunk $last of the image" >&2
        exit 1
    }
done

cat >"$work/cycle.lua" <<'EOF'
-- Cycles through the image's chunks: args = mode ("chunk" | "range"), chunk count, chunk size.
-- Each thread starts at a different chunk. done() prints one machine-readable RESULT line.
local mode, chunks, size
local n = 0
local threads = {}
local counter = 0

function setup(thread)
    thread:set("offset", counter * 37)
    counter = counter + 1
    table.insert(threads, thread)
end

function init(args)
    mode, chunks, size = args[1], tonumber(args[2]), tonumber(args[3])
    n = offset or 0
end

function request()
    local i = n % chunks
    n = n + 1
    if mode == "chunk" then
        return wrk.format("GET", wrk.path .. "&chunk=" .. i)
    end
    local from = i * size
    return wrk.format("GET", wrk.path, { ["Range"] = "bytes=" .. from .. "-" .. (from + size - 1) })
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d bad_status=%d socket_errors=%d\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

cpu_ticks() { # sum of utime+stime over the given pids
    local t=0 pid
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        t=$((t + $(sed -E 's/^.*\) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
    done
    echo "$t"
}
hz=$(getconf CLK_TCK)
nginx_pids() { echo "$nginx_pid" $(pgrep -P "$nginx_pid" || true); }

# run_wrk NAME URL MODE CONNECTIONS DURATION -> prints "req_s p50_ms p99_ms cpu_pct cpu_us_per_req"
run_wrk() {
    local name="$1" url="$2" mode="$3" c="$4" d="$5" pids before after out
    if [[ "$name" == nginx* ]]; then pids="$(nginx_pids)"; else pids="$server_pid"; fi
    before=$(cpu_ticks $pids)
    out="$(wrk -t2 -c"$c" -d"$d" --latency -s "$work/cycle.lua" "$url" -- "$mode" "$chunks" "$chunk")"
    after=$(cpu_ticks $pids)
    echo "$out" >>"$work/wrk-$name-$c.txt"
    awk -v t=$((after - before)) -v hz="$hz" '/^RESULT/ {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
        secs = r["duration_us"] / 1e6; cpu = t / hz
        printf "%.0f %.2f %.2f %.0f %.1f %d %d\n", r["requests"] / secs, r["p50_us"] / 1000,
            r["p99_us"] / 1000, 100 * cpu / secs, 1e6 * cpu / r["requests"], r["bad_status"],
            r["socket_errors"]
    }' <<<"$out"
}

echo "== $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== image ${size} bytes, ${chunks} chunks of ${chunk}; wrk -t2 -d$duration --latency"
echo "   ours-chunk : $ours_chunk&chunk=N"
echo "   ours-range : $ours_range (Range: bytes=…)"
echo "   nginx-range: $nginx_range (Range: bytes=…)"
echo "== warm-up ($warmup per target)"
for t in "ours-chunk $ours_chunk chunk" "ours-range $ours_range range" "nginx-range $nginx_range range"; do
    read -r name url mode <<<"$t"
    run_wrk "warmup-$name" "$url" "$mode" 64 "$warmup" >/dev/null
done

printf '%-12s %5s %10s %9s %9s %8s %11s %8s %8s\n' target conns 'req/s' 'p50 ms' 'p99 ms' 'cpu %' 'cpu us/req' 'non-2xx' 'sock err'
declare -A res
for c in $connections; do
    for t in "ours-chunk $ours_chunk chunk" "ours-range $ours_range range" "nginx-range $nginx_range range"; do
        read -r name url mode <<<"$t"
        r="$(run_wrk "$name" "$url" "$mode" "$c" "$duration")"
        res[$name-$c]="$r"
        read -r rps p50 p99 cpu cpr bad err <<<"$r"
        printf '%-12s %5s %10s %9s %9s %8s %11s %8s %8s\n' "$name" "$c" "$rps" "$p50" "$p99" "$cpu" "$cpr" "$bad" "$err"
    done
done

echo "== ratio ours/nginx (req/s; goal >= 0.8) and requests per CPU-second ours/nginx"
for c in $connections; do
    read -r n_rps _ _ _ n_cpr _ <<<"${res[nginx-range-$c]}"
    for t in ours-chunk ours-range; do
        read -r rps _ _ _ cpr _ <<<"${res[$t-$c]}"
        awk -v t="$t" -v c="$c" -v a="$rps" -v b="$n_rps" -v x="$cpr" -v y="$n_cpr" \
            'BEGIN { printf "%-12s c=%-4s req/s %.2fx   per CPU-second %.2fx\n", t, c, a / b, (x > 0 ? y / x : 0) }'
    done
done
