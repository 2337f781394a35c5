#!/usr/bin/env bash
# Builds the no_std link proof (fails if anything pulls std or alloc) and prints the size of
# the code it links at opt-level "z" with LTO, split by crate (compiler builtins excluded):
# the host proxy for device flash. Host figures include x86-specific SIMD paths of the hash
# crates (SHA-NI, AVX2, PCLMULQDQ) that a microcontroller build does not have.
set -euo pipefail
cd "$(dirname "$0")/../nostd-check"
cargo build --release --locked
# The library is where cargo put it: under CARGO_TARGET_DIR when set (relative to here).
target="${CARGO_TARGET_DIR:-target}"
[[ "$target" = /* ]] || target="$PWD/$target"
lib="$target/release/libnostd_check.a"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && ar x "$lib" $(ar t "$lib" | grep '^nostd_check'))
nm -C --size-sort -S "$work"/nostd_check*.o | awk '
  NF >= 4 && $3 ~ /^[tTrR]$/ {
    size = strtonum("0x" $2); name = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", name)
    crate = name
    sub(/^</, "", crate); sub(/::.*/, "", crate); sub(/ as .*/, "", crate)
    if (crate !~ /^(ota_core|ota_crypto|sha2|md5|crc32fast|curve25519_dalek|ed25519_dalek|chacha20|poly1305|chacha20poly1305|crypto_secretstream|heapless|core)$/) crate = "other"
    kind = ($3 ~ /[tT]/) ? "text" : "rodata"
    sum[crate " " kind] += size; total[kind] += size
  }
  END {
    for (k in sum) printf "  %-22s %-6s %7d bytes\n", substr(k, 1, index(k, " ") - 1), substr(k, index(k, " ") + 1), sum[k] | "sort"
    close("sort")
    printf "no_std proof total: .text %d bytes, .rodata %d bytes (opt-level z, LTO)\n", total["text"], total["rodata"]
  }'
