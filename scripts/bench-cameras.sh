#!/usr/bin/env bash
# Peak memory of the daemon with 1 and with 4 cameras on the full-size int8 models: CLIP
# (two prompts per camera) and OWL-ViT (one prompt per camera, every frame), each camera with
# prompts of its own, replaying a 1920x1080 photo a few times. The shared towers should keep
# 4 cameras within a few percent of 1.
#
#   scripts/bench-cameras.sh [MODELS]   # MODELS: make_fixtures.py --full's output
#                                       # (default target/full-models); PROMPTCAM_BIN: the binary
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${1:-target/full-models}
BIN=${PROMPTCAM_BIN:-target/release/promptcam}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first (or set PROMPTCAM_BIN)" >&2; exit 1; }
for m in clip-vit-base-patch32 owlvit-base-patch32; do
  [ -f "$MODELS/$m/onnx/model_quantized.onnx" ] || { echo "no $MODELS/$m: run models/make_fixtures.py --full" >&2; exit 1; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/frames"
python3 - "$WORK/frames" <<'PY'
import sys, zlib, struct
# a 1920x1080 PNG of smooth colours (no PIL needed)
w, h = 1920, 1080
rows = b"".join(b"\x00" + bytes(v for x in range(w) for v in (x * 255 // w, y * 255 // h, (x * 7 + y * 3) % 256)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
for i in range(3):
    open(f"{sys.argv[1]}/frame{i}.png", "wb").write(png)
PY
PROMPTS=("a delivery van" "a parked car" "an open gate" "a person with a parcel" "a cat" "a bicycle" "a dog" "a garbage bin")
config() { # cameras
  cat <<TOML
[daemon]
inference_threads = 2
[models.clip]
dir = "$MODELS/clip-vit-base-patch32"
quantized = true
[models.owlvit]
dir = "$MODELS/owlvit-base-patch32"
quantized = true
[motion]
enabled = false
TOML
  for i in $(seq 0 $(($1 - 1))); do
    cat <<TOML
[[cameras]]
name = "Camera $i"
source = "$WORK/frames"
fps = 5
[[cameras.prompts]]
text = "${PROMPTS[$((2 * i))]}"
model = "clip"
negatives = ["an empty street"]
[[cameras.prompts]]
text = "${PROMPTS[$((2 * i + 1))]}"
model = "clip"
negatives = ["an empty street"]
[[cameras.prompts]]
text = "${PROMPTS[$((2 * i + 1))]}"
model = "owlvit"
TOML
  done
}
for n in 1 4; do
  config "$n" > "$WORK/cameras-$n.toml"
  /usr/bin/time -f "%M %e" -o "$WORK/time-$n" "$BIN" run --config "$WORK/cameras-$n.toml" > /dev/null 2> "$WORK/log-$n"
  read -r kb secs < "$WORK/time-$n"
  printf "%d camera(s): peak RSS %d MB, %s s for %d frames\n" "$n" $((kb / 1024)) "$secs" $((3 * n))
done
