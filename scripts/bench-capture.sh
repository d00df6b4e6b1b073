#!/usr/bin/env bash
# The capture thread's CPU on a 1080p 30 fps MJPEG camera analysed at 2 fps, with every frame
# decoded as it arrives (before) and with frames decoded only when the inference side takes
# them (now), in one run on one connection (`promptcam bench --capture`). ffmpeg plays the
# camera: a 10 s 1080p clip encoded once, then served in a loop in real time without
# re-encoding, so the peer costs little CPU.
#
#   scripts/bench-capture.sh [SECONDS]      # seconds per phase (default 20); PROMPTCAM_BIN
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_PHASE=${1:-20}
BIN=${PROMPTCAM_BIN:-target/release/promptcam}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first (or set PROMPTCAM_BIN)" >&2; exit 1; }
command -v ffmpeg > /dev/null || { echo "no ffmpeg: apt-get install ffmpeg" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill $FF 2> /dev/null || true; rm -rf "$WORK"' EXIT
ffmpeg -loglevel error -f lavfi -i "testsrc2=size=1920x1080:rate=30" -t 10 -c:v mjpeg -q:v 4 "$WORK/clip.mkv"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ffmpeg -loglevel error -nostdin -re -stream_loop -1 -i "$WORK/clip.mkv" -c:v copy -f mpjpeg \
  -listen 1 "http://127.0.0.1:$PORT/stream" &
FF=$!
sleep 1
"$BIN" bench --capture "http://127.0.0.1:$PORT/stream" --fps 2 --seconds "$SECONDS_PER_PHASE" "${@:2}"
