#!/usr/bin/env python3
"""tract (`promptcam bench`) and onnxruntime side by side, on the same ONNX files, the same input
shapes and the same thread count, in one run; prints the table and the ratios, and with --out
writes BENCHMARKS.md.

    .venv/bin/python models/make_fixtures.py --full          # target/full-models (not committed)
    .venv/bin/python models/make_fixtures.py --owlv2 --full  # + OWLv2 B/16
    cargo build --release
    .venv/bin/python models/bench_ort.py --out BENCHMARKS.md
    .venv/bin/python models/bench_ort.py --only owlvit --repeat 3 --out BENCHMARKS.md

onnxruntime runs the image tower (CLIP vision_model.onnx) or the whole OWL-ViT / OWLv2 model.onnx
with two prompts; promptcam runs what the daemon runs per frame (for OWL models: the image side,
with the prompt tokens folded into the graph). At an input size other than the export's, promptcam
adapts the graph (`promptcam bench --size N --save-graph FILE` writes the adapted file) and
onnxruntime runs that same adapted file. Model times are medians after two warm-up runs; with
--repeat R each case runs R times, alternating tract and onnxruntime, and the table shows the
median of the R medians (the machine may be shared: say so in the notes). Peak RSS is each run's
own process. Results accumulate in --results (JSON), so cases can be measured in several sittings
and the table rendered from all of them.

The README's speed table is generated from the same figures (--out BENCHMARKS.md updates it too):

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
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# label, model directory, file, quantized, kind ("clip" / "owl"), input size (None: native)
CASES = [
    ("CLIP ViT-B/32 image tower, fp32", "clip-vit-base-patch32", "vision_model.onnx", False, "clip", None),
    ("CLIP ViT-B/32 image tower, dynamic int8", "clip-vit-base-patch32", "vision_model_quantized.onnx", True, "clip", None),
]
for _size in (768, 576, 480, 384):
    for _q in (False, True):
        CASES.append((f"OWL-ViT B/32 ({_size} px), {'dynamic int8' if _q else 'fp32'}", "owlvit-base-patch32",
                      "model_quantized.onnx" if _q else "model.onnx", _q, "owl", _size))
for _size in (960, 768, 480):
    for _q in (False, True):
        CASES.append((f"OWLv2 B/16 ({_size} px), {'dynamic int8' if _q else 'fp32'}", "owlv2-base-patch16",
                      "model_quantized.onnx" if _q else "model.onnx", _q, "owl", _size))


def ort_child(path, threads, frames, owl, size):
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
    shape = [d if isinstance(d, int) else 0 for d in
             sess.get_inputs()[[i.name for i in sess.get_inputs()].index("pixel_values")].shape]
    size = size or (768 if owl else 224)
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
    print(json.dumps({"median_ms": statistics.median(times), "min_ms": min(times), "load_ms": load_ms,
                      "peak_rss_mb": rss, "input": shape[2]}))


def run_ort(path, threads, frames, owl, size):
    out = subprocess.run([sys.executable, __file__, "--ort-child", str(path), str(threads), str(frames),
                          "1" if owl else "0", str(size or 0)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_tract(promptcam, model_dir, quantized, threads, frames, size=None, save_graph=None):
    cmd = [str(promptcam), "bench", "--model", str(model_dir), "--threads", str(threads), "--frames", str(frames),
           "--json"]
    if quantized:
        cmd.append("--quantized")
    if size:
        cmd += ["--size", str(size)]
    if save_graph:
        cmd += ["--save-graph", str(save_graph)]
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


def load_average():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


def measure(args, case, threads, tmp):
    label, d, f, quantized, kind, size = case
    owl = kind == "owl"
    model_dir = args.models / d
    frames = max(3, args.frames // 3) if owl else args.frames
    if "OWLv2" in label:
        frames = max(2, args.frames // 10)
    tract_runs, ort_runs, loads = [], [], []
    graph = None
    if owl:
        # the graph promptcam runs at this size, written by a run of its own (writing it raises
        # that process's peak memory), then run by onnxruntime
        graph = Path(tmp) / f"{d}-{size}-{'q' if quantized else 'f'}.onnx"
        if not graph.exists():
            run_tract(args.promptcam, model_dir, quantized, 1, 1, size, graph)
    for r in range(args.repeat):
        t = run_tract(args.promptcam, model_dir, quantized, threads, frames, size)
        o = run_ort(graph if graph else model_dir / "onnx" / f, threads, frames, owl, size)
        tract_runs.append(t)
        ort_runs.append(o)
        loads.append(load_average())
        print(f"  {label} {threads} thr, run {r + 1}/{args.repeat}: tract {t['model_run']['median_ms']:.1f} ms, "
              f"onnxruntime {o['median_ms']:.1f} ms (load average {loads[-1]:.1f})", flush=True)
    med = lambda xs: statistics.median(xs)
    return {
        "label": label, "threads": threads, "size": size,
        "tract_ms": med([t["model_run"]["median_ms"] for t in tract_runs]),
        "ort_ms": med([o["median_ms"] for o in ort_runs]),
        "tract_min_ms": min(t["model_run"]["min_ms"] for t in tract_runs),
        "ort_min_ms": min(o["min_ms"] for o in ort_runs),
        "tract_runs_ms": [round(t["model_run"]["median_ms"], 1) for t in tract_runs],
        "ort_runs_ms": [round(o["median_ms"], 1) for o in ort_runs],
        "tract_rss_mb": max(t["peak_rss_mb"] for t in tract_runs),
        "ort_rss_mb": max(o["peak_rss_mb"] for o in ort_runs),
        "tract_load_ms": med([t["load_ms"] for t in tract_runs]),
        "load_average": [round(x, 1) for x in loads],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def vit_gflop(size, patch, tokens_extra=1, dim=768, mlp=3072, layers=12, heads_macs_per_patch=None):
    """Multiply-adds x 2 of a ViT-B image side at `size` px: per layer 12 T D^2 (QKV, output, MLP) +
    2 T^2 D (attention), the patch embedding, and the OWL heads per patch (box head 3 D^2, class head
    D x 512, OWLv2's objectness head 3 D^2); the text side runs once per prompt set (folded)."""
    patches = (size // patch) ** 2
    t = patches + tokens_extra
    macs = layers * (12 * t * dim * dim + 2 * t * t * dim) + patches * 3 * patch * patch * dim
    macs += patches * (heads_macs_per_patch or 0)
    return 2 * macs / 1e9


# Published High-Performance Linpack (fp64) results, 4 cores each, from
# github.com/jfikar/xhpl-aarch64 (README, "Results" table): Raspberry Pi 5 (Cortex-A76, 2.4 GHz)
# 56.63 GFLOPS, Raspberry Pi 4 (Cortex-A72, 1.8 GHz) 20.34 GFLOPS.
PI_HPL_GFLOPS_PER_CORE = {"Raspberry Pi 5 (4x Cortex-A76, 2.4 GHz)": 56.63 / 4,
                          "Raspberry Pi 4 (4x Cortex-A72, 1.8 GHz)": 20.34 / 4}
PI_THREADS, PI_SCALING = 4, 0.8


def pi_estimate(results):
    """An ESTIMATE, not a measurement: model FLOPs / (published per-core fp64 HPL rate x 2 for fp32 NEON
    lanes x 4 cores x 0.8 assumed parallel efficiency x e), e = onnxruntime / tract fp32 time measured here
    at 1 thread on the same graph (tract's distance from a BLAS-class engine, assumed the same on ARM).
    int8: the fp32 estimate x the int8 / fp32 time ratio measured here for the Pi 5 (its A76 has the
    SDOT int8 dot product), and no gain for the Pi 4 (the A72 has none)."""
    rows = []
    owl_heads = 3 * 768 * 768 + 768 * 512
    models = [("CLIP ViT-B/32 image tower", "CLIP ViT-B/32 image tower, {}", vit_gflop(224, 32)),
              *[(f"OWL-ViT B/32 ({n} px)", f"OWL-ViT B/32 ({n} px), {{}}", vit_gflop(n, 32, heads_macs_per_patch=owl_heads))
                for n in (768, 576, 480, 384)],
              *[(f"OWLv2 B/16 ({n} px)", f"OWLv2 B/16 ({n} px), {{}}",
                 vit_gflop(n, 16, heads_macs_per_patch=owl_heads + 3 * 768 * 768)) for n in (960, 768, 480)]]
    lines = ["| model | GFLOP | e (ort / tract, fp32, 1 thread, here) | "
             + " | ".join(f"{pi}: fp32 / int8 ms (estimate)" for pi in PI_HPL_GFLOPS_PER_CORE) + " |",
             "|---|---|---|" + "---|" * len(PI_HPL_GFLOPS_PER_CORE)]
    for name, key, gflop in models:
        f, q = results.get(key.format("fp32") + "|1"), results.get(key.format("dynamic int8") + "|1")
        if not f:
            continue
        e = f["ort_ms"] / f["tract_ms"]
        cells = []
        for pi, per_core in PI_HPL_GFLOPS_PER_CORE.items():
            rate = 2 * per_core * PI_THREADS * PI_SCALING * e
            fp32 = gflop / rate * 1000
            int8 = fp32 * (q["tract_ms"] / f["tract_ms"]) if q and "A76" in pi else fp32
            cells.append(f"~{fp32:,.0f} / ~{int8:,.0f}")
        lines.append(f"| {name} | {gflop:.1f} | {e:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(results, order):
    lines = [
        "| model (full size, random weights) | threads | tract (promptcam) ms | onnxruntime ms | tract / ort "
        "| fastest frame, tract / ort ms | tract peak RSS MB | ort peak RSS MB | tract load + optimize ms "
        "| runs (tract / ort ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in order:
        for n in sorted({r["threads"] for r in results.values() if r["label"] == label}):
            r = results.get(f"{label}|{n}")
            if not r:
                continue
            runs = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(r["tract_runs_ms"], r["ort_runs_ms"]))
            best = (f"{r['tract_min_ms']:.1f} / {r['ort_min_ms']:.1f}" if "tract_min_ms" in r else "-")
            lines.append(f"| {label} | {n} | {r['tract_ms']:.1f} | {r['ort_ms']:.1f} | {r['tract_ms'] / r['ort_ms']:.2f} "
                         f"| {best} | {r['tract_rss_mb']:.0f} | {r['ort_rss_mb']:.0f} | {r['tract_load_ms']:.0f} | {runs} |")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--ort-child":
        ort_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", int(sys.argv[6]) or None)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=REPO / "target" / "full-models")
    ap.add_argument("--promptcam", type=Path, default=REPO / "target" / "release" / "promptcam")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1, help="runs per case, alternating tract and onnxruntime")
    ap.add_argument("--only", nargs="+", help="only the cases whose label contains one of these words "
                    "(e.g. CLIP, OWL-ViT, OWLv2, int8, 384)")
    ap.add_argument("--results", type=Path, default=REPO / "target" / "bench-results.json",
                    help="measurements accumulate here across runs")
    ap.add_argument("--render", action="store_true", help="measure nothing: write the table from --results")
    ap.add_argument("--out", type=Path, help="write the table into this Markdown file (BENCHMARKS.md: and README.md's)")
    ap.add_argument("--readme", action="store_true", help="only regenerate README.md's speed table from BENCHMARKS.md")
    args = ap.parse_args()
    if args.readme:
        write_readme(parse_rows(BENCHMARKS.read_text()))
        return
    import onnxruntime

    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    cases = [c for c in CASES if not args.only or any(w in c[0] for w in args.only)]
    if not args.render:
        with tempfile.TemporaryDirectory(dir=REPO / "target") as tmp:
            for case in cases:
                if not (args.models / case[1]).is_dir():
                    print(f"skipping {case[0]}: no {args.models / case[1]} (models/make_fixtures.py --full)")
                    continue
                for n in args.threads:
                    r = measure(args, case, n, tmp)
                    results[f"{case[0]}|{n}"] = r
                    args.results.parent.mkdir(parents=True, exist_ok=True)
                    args.results.write_text(json.dumps(results, indent=1))
                    print(f"{r['label']:45} {n} thr: tract {r['tract_ms']:8.1f} ms  onnxruntime {r['ort_ms']:8.1f} ms"
                          f"  ratio {r['tract_ms'] / r['ort_ms']:5.2f}  RSS {r['tract_rss_mb']:6.0f} / "
                          f"{r['ort_rss_mb']:6.0f} MB", flush=True)
    table = render(results, [c[0] for c in CASES])
    print(table)
    estimate = pi_estimate(results)
    print(estimate)
    if args.out:
        dates = sorted({r["date"][:10] for r in results.values()})
        head = (f"Measured by `models/bench_ort.py` on {machine()}, onnxruntime {onnxruntime.__version__}, "
                f"{' to '.join([dates[0], dates[-1]] if len(dates) > 1 else dates)}; model times are medians after "
                f"warm-up (with several runs, the median of the runs' medians; each run in the last column), same "
                f"files, same input shapes, same thread count. OWL rows at other sizes than the export's: promptcam's "
                f"adapted graph, run by both.\n\n")
        replace_block(args.out, "bench_ort", head + table, append=True)
        replace_block(args.out, "pi_estimate", "**Estimate, not a measurement** (method: "
                      + " ".join(pi_estimate.__doc__.split()) + ")\n\n" + estimate, append=True)
        if args.out.resolve() == BENCHMARKS:
            write_readme(parse_rows(BENCHMARKS.read_text()))


BENCHMARKS = REPO / "BENCHMARKS.md"
README = REPO / "README.md"


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
    """(label, threads, tract ms, tract peak RSS MB) of BENCHMARKS.md's bench_ort table, found by its
    header's column names."""
    body = block(text, "bench_ort")
    if body is None:
        sys.exit(f"bench_ort: unable to read {BENCHMARKS}: no bench_ort table; run with --out BENCHMARKS.md")
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
             if line.startswith("|")]
    header = lines[0]
    col = {name: header.index(name) for name in ("threads", "tract (promptcam) ms", "tract peak RSS MB")}
    return [(cells[0], int(cells[col["threads"]]), float(cells[col["tract (promptcam) ms"]]),
             float(cells[col["tract peak RSS MB"]])) for cells in lines[1:] if cells[col["threads"]].isdigit()]


def write_readme(rows):
    """README.md's speed table: tract's per-frame model time at each thread count and its peak RSS
    (the largest over the thread counts), per model, from the same rows as BENCHMARKS.md."""
    threads = sorted({n for _, n, _, _ in rows})
    labels = list(dict.fromkeys(label for label, *_ in rows))
    lines = ["| per analysed frame, tract (from BENCHMARKS.md) | "
             + " | ".join(f"{n} thread{'s' if n > 1 else ''}" for n in threads) + " | peak RSS |",
             "|---" * (len(threads) + 2) + "|"]
    for label in labels:
        mine = {n: (t, rss) for l, n, t, rss in rows if l == label}
        cells = [f"{mine[n][0]:.1f} ms" if n in mine else "-" for n in threads]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {max(r for _, r in mine.values()):.0f} MB |")
    replace_block(README, "speed", "\n".join(lines))
    print(f"updated the speed table in {README}")

if __name__ == "__main__":
    main()
