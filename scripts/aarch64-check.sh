#!/usr/bin/env bash
# Cross-builds promptcam for aarch64 (Raspberry Pi OS bookworm, Jetson's Ubuntu) and runs the
# tiny-model parity tests and a bench under qemu-user: a correctness check of tract's ARM
# kernels (qemu times are not real timings).
#
#   scripts/aarch64-check.sh            # build + kernel and parity tests (as A72 and A76) + bench under qemu
set -euo pipefail
cd "$(dirname "$0")/.."

# g++: openh264 (the RTSP H.264 decoder) builds its bundled C++ sources for the target
if command -v apt-get >/dev/null && ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static >/dev/null
fi
rustup target add aarch64-unknown-linux-gnu

T=aarch64-unknown-linux-gnu
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++

cargo build --release --target $T
file target/$T/release/promptcam
# the runner in .cargo/config.toml runs the test binary under qemu-aarch64-static; the CLI
# tests run the promptcam binary through the same emulator
export PROMPTCAM_TEST_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
# tract picks its ARM kernels by CPU: the Pi 4's Cortex-A72 has no dot-product instructions (its
# int8 runs the SMLAL kernels), the Pi 5's A76 has them (SDOT). qemu emulates each CPU exactly
# (QEMU_CPU: an A72 build that used SDOT would fault), and TRACT_CPU_AARCH64_KIND picks tract's
# A72 tuning. Each runs every int8 kernel tract offers there against a plain product
# (model::int8_kernels), then the fp32 and int8 parity tests against transformers / onnxruntime.
for cpu in cortex-a72 cortex-a76; do
  kind=generic
  [ $cpu = cortex-a72 ] && kind=a72
  echo "== $cpu (TRACT_CPU_AARCH64_KIND=$kind)"
  QEMU_CPU=$cpu TRACT_CPU_AARCH64_KIND=$kind cargo test --target $T --lib -- int8_kernels --nocapture
  # (the CLIPSeg daemon test is left out: under emulation its file source ends before the
  # daemon has analysed enough frames, a matter of speed, not of kernels)
  QEMU_CPU=$cpu TRACT_CPU_AARCH64_KIND=$kind cargo test --target $T --test tests -- vision:: owl:: segment:: \
    --skip segment::a_clipseg_prompt_in_the_daemon_is_a_coverage_sensor
done
# qemu's default CPU has SVE, whose kernels tract runs on Neoverse-class cores (and the benches
# below): their int8 kernels against the plain product too
QEMU_CPU=max cargo test --target $T --lib -- int8_kernels --nocapture
# the hand-vectorised pieces (the fused int8 passes, the layer norm, the attention heads, the
# cropped resize, OWLv2's blur and zoom, the grid adaptation, the history's f16 decoding)
# against their definitions, on the ARM build
cargo test --target $T --lib -- quantize qsimd fused norm attention heads preprocess grid store
# the vendored V4L2 bindings (vendor/v4l2-sys-mit) against the layout rustc uses for the target
cargo test --target $T -p v4l2-sys-mit
qemu-aarch64-static -L /usr/aarch64-linux-gnu target/$T/release/promptcam bench --model models/tiny/clip --quantized --frames 3
qemu-aarch64-static -L /usr/aarch64-linux-gnu target/$T/release/promptcam bench --model models/tiny/owlvit --quantized --size 384 --frames 3
