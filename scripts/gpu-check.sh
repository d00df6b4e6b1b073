#!/usr/bin/env bash
# The GPU check of the `cuda` feature (issue 25), in two halves:
#
#   scripts/gpu-check.sh prepare   # here: build the cuda binaries, stripped and compressed into
#                                  # target/gpu-check (what the device tool carries, < 64 MiB)
#   scripts/gpu-check.sh run       # on the GPU box (x86, NVIDIA driver, torch's CUDA wheels):
#                                  # parity on the GPU, then bench --device cuda against cpu
#
# `run` writes everything to $OUT (default target/gpu-check/out): the GPU's name, the test log, the
# CPU-against-GPU comparison of the full-size models, and the bench figures as JSON.
# The device tool's call is then, for example:
#   run(command="scripts/gpu-check.sh run", carry=["target/gpu-check"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=target/gpu-check

prepare() {
  mkdir -p $DIR
  cargo build --release --features cuda
  # the model tests (dev profile: dependencies optimised, as in scripts/test)
  local tests
  tests=$(cargo test --features cuda --no-run --test tests --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "tests" and m.get("executable"):
        print(m["executable"])')
  for pair in "target/release/promptcam:promptcam" "$tests:tests"; do
    strip -o "$DIR/${pair#*:}" "${pair%%:*}"
    xz -T0 -6 -f "$DIR/${pair#*:}"
  done
  ls -l $DIR
  du -cb $DIR/*.xz | tail -1 | awk '{ if ($1 > 60 * 1048576) { print "gpu-check: over 60 MiB, too big to carry" > "/dev/stderr"; exit 1 } }'
}

run() {
  local out=${OUT:-$DIR/out}
  mkdir -p "$out" "$DIR/bin"
  for b in promptcam tests; do
    xz -dc "$DIR/$b.xz" >"$DIR/bin/$b"
    chmod +x "$DIR/bin/$b"
  done
  local bin=$DIR/bin/promptcam
  # tract-cuda loads cudart, NVRTC, cuBLAS and cuDNN at run time: take them from the CUDA 12
  # wheels torch installs when the system has none
  local libs
  libs=$(python3 - <<'EOF' || true
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
print(":".join(sorted({os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "*", "lib", "*.so*"))})))
EOF
)
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  { nvidia-smi -L || true; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true; } | tee "$out/gpu.txt"

  # 1. the tiny models' parity tests against transformers (and onnxruntime for int8, which stays
  # on the CPU), with every fp32 model on the GPU; then gpu:: asserts the GPU took them
  export PROMPTCAM_TEST_REPO=$PWD PROMPTCAM_TEST_BIN=$PWD/$bin RUST_LOG=${RUST_LOG:-info}
  PROMPTCAM_DEVICE=cuda "$DIR/bin/tests" --test-threads 1 vision:: owl:: segment:: \
    --skip segment::a_clipseg_prompt_in_the_daemon_is_a_coverage_sensor 2>&1 | tee "$out/tests.log" || true
  PROMPTCAM_DEVICE=cuda "$DIR/bin/tests" --ignored gpu:: 2>&1 | tee -a "$out/tests.log" || true

  # 2. full-size models (random weights, the real shapes): CPU against GPU on the same images,
  # then the bench at 768 and 384 px
  local full=target/full-models
  if [ ! -d $full/clip-vit-base-patch32 ]; then
    python3 models/make_fixtures.py --full --out $full >"$out/make_fixtures.log" 2>&1 || echo "gpu-check: unable to export the full-size models (see make_fixtures.log)"
  fi
  local images=tests/fixtures/images
  for dev in cpu cuda; do
    PROMPTCAM_DEVICE=$dev $bin classify --model $full/clip-vit-base-patch32 --json \
      --prompt "a photo of a person" --prompt "a photo of a delivery van" $images/*.png >"$out/classify-$dev.json" 2>"$out/classify-$dev.log" || true
    PROMPTCAM_DEVICE=$dev $bin detect --model $full/owlvit-base-patch32 --json --threshold 0.05 \
      --prompt "a person" --prompt "a delivery van" $images/*.png >"$out/detect-$dev.json" 2>"$out/detect-$dev.log" || true
  done
  python3 - "$out" <<'EOF' | tee "$out/parity.txt" || true
import json, sys, os
out = sys.argv[1]
def rows(name):
    with open(os.path.join(out, name)) as f:
        return [json.loads(l) for l in f if l.strip()]
def numbers(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        yield float(v)
    elif isinstance(v, dict):
        for k in sorted(v):
            yield from numbers(v[k])
    elif isinstance(v, list):
        for x in v:
            yield from numbers(x)
def scores(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "score" and isinstance(x, (int, float)):
                yield float(x)
            else:
                yield from scores(x)
    elif isinstance(v, list):
        for x in v:
            yield from scores(x)
for what in ["classify", "detect"]:
    try:
        a, b = rows(f"{what}-cpu.json"), rows(f"{what}-cuda.json")
    except OSError as e:
        print(f"{what}: missing output ({e})"); continue
    if what == "detect":
        # boxes come sorted by score, and near-equal scores may swap places between devices:
        # compare the scores rank by rank
        x, y = sorted(scores(a)), sorted(scores(b))
    else:
        x, y = list(numbers(a)), list(numbers(b))
    if len(x) != len(y) or not x:
        print(f"{what}: outputs differ in shape ({len(x)} against {len(y)} numbers)"); continue
    worst = max(abs(p - q) for p, q in zip(x, y))
    scale = max(max(abs(p) for p in x), 1e-12)
    print(f"{what}: {len(x)} numbers, largest difference {worst:.3g} (relative to the largest value {worst / scale:.3g})")
EOF
  for m in "clip-vit-base-patch32:" "owlvit-base-patch32:768" "owlvit-base-patch32:384"; do
    local model=${m%%:*} size=${m#*:}
    for dev in cpu cuda; do
      $bin bench --model $full/$model --device $dev --frames 20 --threads 0 --json ${size:+--size $size} \
        >"$out/bench-$model${size:+-$size}-$dev.json" 2>"$out/bench-$model${size:+-$size}-$dev.log" || true
    done
  done
  python3 - "$out" <<'EOF' | tee "$out/bench.txt" || true
import json, sys, os, glob
out = sys.argv[1]
for f in sorted(glob.glob(os.path.join(out, "bench-*.json"))):
    try:
        r = json.load(open(f))
    except Exception as e:
        print(os.path.basename(f), "no result:", e); continue
    ms = r["model_run"]["median_ms"]
    total = sum(r[k]["median_ms"] for k in ["decode", "preprocess", "model_run", "postprocess"])
    print(f'{os.path.basename(f)[6:-5]:<34} {r["device"][:40]:<40} model {ms:8.2f} ms  end to end {1000 / total:7.1f} frames/s  load {r["load_ms"]:.0f} ms')
EOF
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: scripts/gpu-check.sh prepare|run" >&2; exit 2 ;;
esac
