#!/usr/bin/env bash
# Cross-builds promptcam for aarch64 (Raspberry Pi OS bookworm, Jetson's Ubuntu) and runs the
# tiny-model parity tests and a bench under qemu-user: a correctness check of tract's ARM
# kernels (qemu times are not real timings).
#
#   scripts/aarch64-check.sh            # build + vision and OWL parity tests + bench under qemu
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
cargo test --target $T --test tests -- vision:: owl::
# the hand-vectorised pieces (the fused int8 passes, the cropped resize, OWLv2's blur and zoom,
# the grid adaptation) against their definitions, on the ARM build
cargo test --target $T --lib -- quantize fused preprocess grid
# the vendored V4L2 bindings (vendor/v4l2-sys-mit) against the layout rustc uses for the target
cargo test --target $T -p v4l2-sys-mit
qemu-aarch64-static -L /usr/aarch64-linux-gnu target/$T/release/promptcam bench --model models/tiny/clip --quantized --frames 3
qemu-aarch64-static -L /usr/aarch64-linux-gnu target/$T/release/promptcam bench --model models/tiny/owlvit --quantized --size 384 --frames 3
