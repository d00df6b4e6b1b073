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

The README's speed table is generated from the same figures (--out updates it too):

    python3 models/bench_ort.py --readme       # README.md's table from BENCHMARKS.md, no measuring
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
    ap.add_argument("--out", type=Path, help="write the table into this Markdown file (BENCHMARKS.md: and README.md's)")
    ap.add_argument("--readme", action="store_true", help="only regenerate README.md's speed table from BENCHMARKS.md")
    args = ap.parse_args()
    if args.readme:
        write_readme(parse_rows(BENCHMARKS.read_text()))
        return
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
    table = "\n".join(bench_table(rows))
    print(table)
    if args.out:
        head = (f"Measured by `models/bench_ort.py` on {machine()}, onnxruntime {onnxruntime.__version__}, "
                f"{time.strftime('%Y-%m-%d')}; model times are medians after warm-up, same files, same input shapes, "
                f"same thread count, in one run.\n\n")
        replace_block(args.out, "bench_ort", f"{head}{table}", append=True)
        if args.out.resolve() == BENCHMARKS:
            write_readme(rows)


BENCHMARKS = REPO / "BENCHMARKS.md"
README = REPO / "README.md"


def bench_table(rows):
    lines = [
        "| model (full size, random weights) | threads | tract (promptcam) ms | onnxruntime ms | tract / ort | tract peak RSS MB | ort peak RSS MB | tract load + optimize ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, n, t, o, tr, orr, load in rows:
        lines.append(f"| {label} | {n} | {t:.1f} | {o:.1f} | {t / o:.2f} | {tr:.0f} | {orr:.0f} | {load:.0f} |")
    return lines


def block(text, name):
    start, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return None
    return text[text.index(start) + len(start): text.index(end)]


def replace_block(path, name, body, append=False):
    """Writes body between the file's <!-- name:begin --> and <!-- name:end --> markers."""
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    new = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + new + text[text.index(end) + len(end):]
    elif append:
        text = text + "\n" + new + "\n"
    else:
        sys.exit(f"bench_ort: unable to update {path}: no {start} ... {end} markers")
    path.write_text(text)


def parse_rows(text):
    """The rows of BENCHMARKS.md's bench_ort table, as bench_table wrote them."""
    body = block(text, "bench_ort")
    if body is None:
        sys.exit(f"bench_ort: unable to read {BENCHMARKS}: no bench_ort table; run with --out BENCHMARKS.md")
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[1].isdigit():
            rows.append((cells[0], int(cells[1]), float(cells[2]), float(cells[3]), float(cells[5]), float(cells[6]),
                         float(cells[7])))
    return rows


def write_readme(rows):
    """README.md's speed table: tract's per-frame model time at each thread count and its peak RSS
    (the largest over the thread counts), per model, from the same rows as BENCHMARKS.md."""
    threads = sorted({n for _, n, *_ in rows})
    labels = list(dict.fromkeys(label for label, *_ in rows))
    lines = ["| per analysed frame, tract (from BENCHMARKS.md) | "
             + " | ".join(f"{n} thread{'s' if n > 1 else ''}" for n in threads) + " | peak RSS |",
             "|---" * (len(threads) + 2) + "|"]
    for label in labels:
        mine = {n: (t, rss) for l, n, t, _, rss, _, _ in rows if l == label}
        cells = [f"{mine[n][0]:.1f} ms" if n in mine else "-" for n in threads]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {max(r for _, r in mine.values()):.0f} MB |")
    replace_block(README, "speed", "\n".join(lines))
    print(f"updated the speed table in {README}")

if __name__ == "__main__":
    main()
