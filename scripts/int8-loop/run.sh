#!/usr/bin/env bash
# Builds and runs the int8 inner-loop benchmarks (x86_64; needs gcc): the AVX2 loops (main.c,
# loops.S; AVX2 and FMA), the AVX2 16x6 candidates against the shipped 8x8 (wide.c, wide.S),
# then, on a CPU with AVX-512 VNNI, the VNNI loops (vnni.c, vnni.S).
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -r "$out"' EXIT
gcc -O2 main.c loops.S -o "$out/int8-loop"
"$out/int8-loop"
gcc -O2 wide.c wide.S loops.S -o "$out/wide-loop"
"$out/wide-loop"
if grep -qw avx512_vnni /proc/cpuinfo; then
    gcc -O2 vnni.c vnni.S -o "$out/vnni-loop"
    "$out/vnni-loop"
else
    echo "no AVX-512 VNNI on this CPU: the VNNI loops are not run"
fi
