#!/usr/bin/env bash
# Builds and runs the int8 inner-loop benchmark (x86_64 with AVX2 and FMA; needs gcc).
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
gcc -O2 main.c loops.S -o "$out/int8-loop"
"$out/int8-loop"
rm -r "$out"
