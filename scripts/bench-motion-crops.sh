#!/usr/bin/env bash
# Motion crops against whole frames, on a clip where one object moves: a 1280x720 scene (a
# still textured background, a parked block that never moves) with a small square crossing it,
# 2 frames a second for 30 s, replayed through the daemon with one OWL-ViT prompt at three
# settings: the whole frame at 768 px, the whole frame at 384 px, and motion crops at 384 px.
# Prints, per setting, the analysed frames, the mean inference time per analysed frame (the
# daemon's own figure, logged at exit) and the events that fired.
#
#   scripts/bench-motion-crops.sh [MODELS]   # MODELS: make_fixtures.py --full's output
#                                            # (default target/full-models); PROMPTCAM_BIN
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${1:-target/full-models}
BIN=${PROMPTCAM_BIN:-target/release/promptcam}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first (or set PROMPTCAM_BIN)" >&2; exit 1; }
[ -f "$MODELS/owlvit-base-patch32/onnx/model_quantized.onnx" ] ||
  { echo "no $MODELS/owlvit-base-patch32: run models/make_fixtures.py --full" >&2; exit 1; }
command -v ffmpeg > /dev/null || { echo "no ffmpeg: apt-get install ffmpeg" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/frames"
# the recorded clip, as JPEG frames a camera would send: one still background (testsrc2's first
# frame, greyed), a navy block that never moves, and a red square crossing the scene
ffmpeg -loglevel error -f lavfi -i "testsrc2=size=1280x720" -frames:v 1 -vf "hue=s=0" "$WORK/bg.png"
for i in $(seq 0 59); do
  ffmpeg -loglevel error -i "$WORK/bg.png" \
    -vf "drawbox=x=900:y=420:w=220:h=160:color=navy:t=fill,drawbox=x=$((60 + (i * 37) % 1100)):y=240:w=90:h=90:color=red:t=fill" \
    -q:v 3 "$WORK/frames/f$(printf %03d "$i").jpg"
done
config() { # input_size motion_crops
  cat <<TOML
[daemon]
inference_threads = 2
[models.owlvit]
dir = "$MODELS/owlvit-base-patch32"
quantized = true
input_size = $1
[[cameras]]
name = "Yard"
source = "$WORK/frames"
fps = 2
motion_crops = $2
full_frame_every = 10
[[cameras.prompts]]
text = "a red square"
model = "owlvit"
threshold = 0.1
TOML
}
printf "%-26s %9s %22s %s\n" setting analysed "inference ms/frame" "events (start/end)"
for setting in "768 false" "384 false" "384 true"; do
  set -- $setting
  config "$1" "$2" > "$WORK/c.toml"
  "$BIN" run --config "$WORK/c.toml" > "$WORK/events" 2> "$WORK/log"
  line=$(grep -o "camera yard: .*" "$WORK/log" | tail -1)
  analysed=$(sed -E 's/.* ([0-9]+) analysed.*/\1/' <<<"$line")
  ms=$(sed -E 's/.*, ([0-9.]+) ms inference.*/\1/' <<<"$line")
  starts=$(grep -c '"type":"start"' "$WORK/events" || true)
  ends=$(grep -c '"type":"end"' "$WORK/events" || true)
  label="$1 px, $([ "$2" = true ] && echo "motion crops" || echo "whole frame")"
  printf "%-26s %9s %22s %s/%s\n" "$label" "$analysed" "$ms" "$starts" "$ends"
done
