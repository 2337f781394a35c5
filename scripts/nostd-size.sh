#!/usr/bin/env bash
# Builds the no_std link proof (fails if anything pulls std or alloc) and prints the size of
# our own code at opt-level "z" (the object file of the proof crate after LTO; compiler
# builtins excluded): the host proxy for device flash.
set -euo pipefail
cd "$(dirname "$0")/../nostd-check"
cargo build --release --locked
lib=target/release/libnostd_check.a
size -A "$lib" 2>/dev/null | awk '
  /^nostd_check-.*\(ex / { obj = 1; next }
  /\(ex / { obj = 0; next }
  obj && $1 ~ /^\.text/ { text += $2 }
  obj && $1 ~ /^\.rodata/ { ro += $2 }
  END { printf "no_std proof: .text %d bytes, .rodata %d bytes (opt-level z, LTO)\n", text, ro }'
