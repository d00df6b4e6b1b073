#!/usr/bin/env python3
"""tract (`promptcam bench`) and onnxruntime side by side, on the same ONNX files, the same input
shapes and the same thread count, in one run; prints the table and the ratios, and with --out
writes BENCHMARKS.md.

    .venv/bin/python models/make_fixtures.py --full          # target/full-models (not committed)
    cargo build --release
    .venv/bin/python models/bench_ort.py --out BENCHMARKS.md

onnxruntime runs the image tower (CLIP vision_model.onnx) or the whole OWL-ViT model.onnx with two
prompts; promptcam runs what the daemon runs per frame (for OWL-ViT: the image side, with the prompt
tokens folded into the graph). Model times are medians after two warm-up runs; peak RSS is each
run's own process.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ort_child(path, threads, frames, owl):
    """Runs in a child process so its peak RSS is its own."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t = time.perf_counter()
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t) * 1000
    shape = [1, 3] + [d if isinstance(d, int) else 0 for d in sess.get_inputs()[[i.name for i in sess.get_inputs()].index("pixel_values")].shape[2:]]
    size = 768 if owl else 224
    shape = [1, 3, shape[2] or size, shape[3] or size]
    rng = np.random.default_rng(0)
    feed = {"pixel_values": rng.standard_normal(shape).astype(np.float32)}
    if owl:
        ids = np.full((2, 16), 0, dtype=np.int64)
        ids[:, 0], ids[:, 1], ids[:, 2], ids[:, 3] = 49406, 320, 2533, 49407
        feed["input_ids"] = ids
        feed["attention_mask"] = (ids != 0).astype(np.int64)
    out = ["logits"] if owl else ["image_embeds"]
    times = []
    for i in range(frames + 2):
        t = time.perf_counter()
        sess.run(out, feed)
        if i >= 2:
            times.append((time.perf_counter() - t) * 1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_ms": statistics.median(times), "load_ms": load_ms, "peak_rss_mb": rss}))


def run_ort(path, threads, frames, owl):
    out = subprocess.run([sys.executable, __file__, "--ort-child", str(path), str(threads), str(frames), "1" if owl else "0"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_tract(promptcam, model_dir, quantized, threads, frames):
    cmd = [str(promptcam), "bench", "--model", str(model_dir), "--threads", str(threads), "--frames", str(frames), "--json"]
    if quantized:
        cmd.append("--quantized")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--ort-child":
        ort_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1")
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=REPO / "target" / "full-models")
    ap.add_argument("--promptcam", type=Path, default=REPO / "target" / "release" / "promptcam")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write the table into this Markdown file")
    args = ap.parse_args()
    import onnxruntime

    cases = [
        ("CLIP ViT-B/32 image tower, fp32", "clip-vit-base-patch32", "vision_model.onnx", False, False),
        ("CLIP ViT-B/32 image tower, dynamic int8", "clip-vit-base-patch32", "vision_model_quantized.onnx", True, False),
        ("OWL-ViT B/32 (768 px), fp32", "owlvit-base-patch32", "model.onnx", False, True),
        ("OWL-ViT B/32 (768 px), dynamic int8", "owlvit-base-patch32", "model_quantized.onnx", True, True),
    ]
    rows = []
    for label, d, f, quantized, owl in cases:
        for n in args.threads:
            frames = max(3, args.frames // 3) if owl else args.frames
            t = run_tract(args.promptcam, args.models / d, quantized, n, frames)
            o = run_ort(args.models / d / "onnx" / f, n, frames, owl)
            row = (label, n, t["model_run"]["median_ms"], o["median_ms"], t["peak_rss_mb"], o["peak_rss_mb"], t["load_ms"])
            rows.append(row)
            print(f"{label:45} {n} thr: tract {row[2]:8.1f} ms  onnxruntime {row[3]:8.1f} ms  ratio {row[2] / row[3]:5.2f}"
                  f"  RSS {row[4]:6.0f} / {row[5]:6.0f} MB  load {row[6]:6.0f} ms", flush=True)
    lines = [
        "| model (full size, random weights) | threads | tract (promptcam) ms | onnxruntime ms | tract / ort | tract peak RSS MB | ort peak RSS MB | tract load + optimize ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, n, t, o, tr, orr, load in rows:
        lines.append(f"| {label} | {n} | {t:.1f} | {o:.1f} | {t / o:.2f} | {tr:.0f} | {orr:.0f} | {load:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        head = (f"Measured by `models/bench_ort.py` on {machine()}, onnxruntime {onnxruntime.__version__}, "
                f"{time.strftime('%Y-%m-%d')}; model times are medians after warm-up, same files, same input shapes, "
                f"same thread count, in one run.\n\n")
        text = args.out.read_text() if args.out.exists() else ""
        start, end = "<!-- bench_ort:begin -->", "<!-- bench_ort:end -->"
        block = f"{start}\n{head}{table}\n{end}"
        if start in text and end in text:
            text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
        else:
            text = text + "\n" + block + "\n"
        args.out.write_text(text)


if __name__ == "__main__":
    main()
