#!/usr/bin/env python3
"""Inference workers benchmark (issue 21): frames a second and peak memory of the daemon with
4 cameras on 1 worker and on 2 (or more) workers, in one run of this script.

Each camera replays the fixture photos (looped, faster than the daemon keeps up with, motion
gate off) with prompts of its own on CLIP and OWL-ViT: the demo's tiny models by default (so
decoding and preprocessing weigh as much as the models), or full-size ones (`--clip`, `--owl`:
`models/make_fixtures.py --full`'s output). The daemon runs `--hold` seconds after READY, then
stops, and the cameras' analysed frames are summed from its log.

    scripts/bench-workers.py [--bin target/release/promptcam] [--workers 1,2] [--threads 0]
        [--cameras 4] [--clip DIR --owl DIR] [--size 384] [--quantized auto|true|false]
        [--fps 60] [--hold 30]

`--threads` is `inference_threads` (0: measured; with several workers, split between them).
The first run per worker count fills the start cache (not timed: its measuring would eat the
window); the second is the one reported.
"""

import argparse
import importlib.util
import os
import re
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench_start", os.path.join(REPO, "scripts/bench-start.py"))
bench_start = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_start)

TEXTS = ["a delivery van", "a parked car", "an open gate", "a person with a parcel",
         "a cat", "a bicycle", "a dog", "a garbage bin", "a ladder", "a pizza box"]


def config(tmp, args, workers):
    q = {"auto": '"auto"', "true": "true", "false": "false"}[args.quantized]
    out = f"""
[daemon]
inference_threads = {args.threads}
inference_workers = {workers}

[models.clip]
dir = "{args.clip}"
quantized = {q}

[models.owlvit]
dir = "{args.owl}"
quantized = {q}
{f"input_size = {args.size}" if args.size else ""}

[motion]
enabled = false

[history]
enabled = false
"""
    for i in range(args.cameras):
        out += f"""
[[cameras]]
name = "Camera {i}"
source = "{REPO}/tests/fixtures/images"
fps = {args.fps}
loop = true

[[cameras.prompts]]
text = "{TEXTS[i % len(TEXTS)]}"
model = "clip"
negatives = ["an empty street"]

[[cameras.prompts]]
text = "{TEXTS[(i + 5) % len(TEXTS)]}"
model = "owlvit"
"""
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(REPO, "target/release/promptcam"))
    p.add_argument("--clip", default=os.path.join(REPO, "models/tiny/clip"))
    p.add_argument("--owl", default=os.path.join(REPO, "models/tiny/owlvit"))
    p.add_argument("--size", type=int, default=0, help="OWL-ViT's input_size (0: the model's own)")
    p.add_argument("--fps", type=float, default=60, help="each camera's replay rate")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--quantized", choices=["auto", "true", "false"], default="auto")
    p.add_argument("--hold", type=float, default=30)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--log", action="store_true", help="print every log line")
    args = p.parse_args()
    print(f"{args.bin}: {args.cameras} cameras, quantized = {args.quantized}, input_size {args.size or 'native'}, "
          f"inference_threads {args.threads}, {os.cpu_count()} cores, {args.hold:.0f} s a run")
    results = []
    for workers in [int(w) for w in args.workers.split(",")]:
        tmp = tempfile.mkdtemp(prefix="promptcam-workers-")
        try:
            with open(os.path.join(tmp, "promptcam.toml"), "w") as f:
                f.write(config(tmp, args, workers))
            bench_start.one_run(args, tmp)  # fills the start cache
            ready, lines, peak_kb = bench_start.one_run(args, tmp, args.hold)
            if ready is None:
                print("\n".join(lines[-40:]))
                sys.exit(f"{workers} worker(s): the daemon did not become ready")
            analysed = sum(int(m.group(1)) for line in lines
                           for m in [re.search(r"undecodable, (\d+) analysed", line)] if m)
            rate = analysed / args.hold
            results.append((workers, rate, peak_kb))
            print(f"inference_workers = {workers}: {analysed} frames in {args.hold:.0f} s, "
                  f"{rate:.2f} frames/s, peak RSS {peak_kb // 1024 if peak_kb else '?'} MB")
            for line in lines:
                if args.log or "inference on" in line or "workers" in line or "camera " in line and "analysed" in line:
                    print("   ", line)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    base = results[0]
    for workers, rate, peak_kb in results[1:]:
        mem = f"{peak_kb / base[2]:.2f}x" if peak_kb and base[2] else "?"
        print(f"{workers} workers against {base[0]}: {rate / base[1]:.2f}x the frames a second, {mem} the peak RSS")


if __name__ == "__main__":
    main()
