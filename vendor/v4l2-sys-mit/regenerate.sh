#!/usr/bin/env bash
# Regenerates src/bindings/{x86_64,aarch64,arm}.rs, the V4L2 bindings promptcam's build uses in
# place of v4l2-sys-mit's build-time bindgen run (so building needs no libclang). Run it after
# changing wrapper.h or to pick up newer kernel headers; commit the result.
#
# Needs libclang and the kernel + libc headers of each target (Debian/Ubuntu package names):
#   apt-get install libclang-dev linux-libc-dev libc6-dev-arm64-cross libc6-dev-armhf-cross
# The headers decide the result: the committed files were made on Debian 12 (bookworm) with its
# 6.1 kernel headers (linux-libc-dev, linux-libc-dev-{arm64,armhf}-cross) and clang 14.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-../../target/v4l2-bindings-generate}
cargo build --quiet --manifest-path generate/Cargo.toml
GEN=$CARGO_TARGET_DIR/debug/v4l2-bindings-generate
mkdir -p src/bindings
# rust target_arch  clang target             cross sysroot (empty: the host's /usr/include)
while read -r arch target sysroot; do
  args=()
  if [ "$sysroot" != - ]; then
    [ -f "$sysroot/include/linux/videodev2.h" ] || { echo "regenerate: $sysroot/include/linux/videodev2.h is missing: install the $arch cross headers (see above)" >&2; exit 2; }
    args=(--sysroot="$sysroot" -I"$sysroot/include")
  fi
  "$GEN" "$target" "src/bindings/$arch.rs" "${args[@]}"
  echo "src/bindings/$arch.rs ($target): $(wc -c <"src/bindings/$arch.rs") bytes"
done <<'TARGETS'
x86_64  x86_64-unknown-linux-gnu  -
aarch64 aarch64-linux-gnu         /usr/aarch64-linux-gnu
arm     armv7-linux-gnueabihf     /usr/arm-linux-gnueabihf
TARGETS
