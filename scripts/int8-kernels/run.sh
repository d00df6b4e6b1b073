#!/bin/sh
# Times the vendored tract-linalg's int8 kernels alone, one thread, on a few of the models' shapes
# (CLIP's 50 tokens, OWL-ViT's 145 at 384 px, and n = 60, a multiple of every tile's width).
# TRACT_CPU_ISA=-avx512f,-avx512vnni shows an AVX2 CPU's kernels on a CPU with VNNI.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --target-dir "$here/../../target/int8-kernels"
bin="$here/../../target/int8-kernels/release/int8-kernels"
grep -m1 'model name' /proc/cpuinfo || true
for shape in "768 768 60 200" "768 3072 60 60" "768 768 50 200" "768 768 145 80"; do
    # shellcheck disable=SC2086
    "$bin" $shape
    echo
done
