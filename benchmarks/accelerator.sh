#!/usr/bin/env bash
# One accelerator check, at most 8 minutes, that installs nothing beyond requirements.txt:
#   bash benchmarks/accelerator.sh
# Prints bf16 training throughput at a batch that fills one GPU, model-FLOPs utilisation and peak memory for
# ResNet-50, VGG-16, DenseNet-121 and MobileNet v1 (synthetic data, the real jitted train step), then the wall time
# of the LeNet-5 main job. Each figure comes from its own process with its own time limit, so one failure costs
# one row. Rows go to $OUT/accelerator.jsonl (default /tmp/cnn_flax_accelerator) and a table ends the output.
# A machine without network access may carry requirements.txt's missing packages as wheels in .whl/ (see
# benchmarks/README.md); they are installed into a private directory, nothing else is.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cnn_flax_accelerator}
mkdir -p "$OUT"
rows="$OUT/accelerator.jsonl"
: > "$rows"
start=$(date +%s)

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cnn_flax_site .whl/*.whl \
    && export PYTHONPATH=/tmp/cnn_flax_site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi -L 2>/dev/null
python3 - <<'PY' || exit 1
import importlib, sys
missing = [m for m in ("jax", "flax", "optax", "orbax.checkpoint", "ml_collections", "grain", "tensorboardX", "tqdm")
           if importlib.util.find_spec(m.split(".")[0]) is None]
if missing:
  sys.exit(f"missing packages: {missing}; pip install -r requirements.txt (or carry wheels in .whl/)")
import jax, flax, optax
print(f"python {sys.version.split()[0]}, jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
      f"devices: {jax.devices()}", flush=True)
PY

bench() {  # bench LIMIT_SECONDS ARGS...: one throughput row
  local limit=$1; shift
  echo "--- throughput $* ($(( $(date +%s) - start )) s elapsed)"
  if ! timeout "$limit" python3 benchmarks/throughput.py --dtype bfloat16 --warmup 5 "$@" > "$OUT/last.out" \
      2> "$OUT/last.err"; then
    echo "FAILED or timed out: $*"; tail -5 "$OUT/last.err"; return
  fi
  tail -1 "$OUT/last.out" | tee -a "$rows"
}

# SMOKE=1 runs the same script at toy sizes, to check it on a CPU before spending accelerator time.
if [ "${SMOKE:-0}" = 1 ]; then big="--batch_size 4 --image_size 64 --steps 2"; mid=$big; else
  big="--batch_size 512 --steps 30"; mid="--batch_size 256 --steps 20"; fi
bench 140 --model resnet50 $big
bench 90 --model vgg16 $mid
bench 120 --model densenet121 $mid
bench 70 --model mobilenet_v1 $big

echo "--- LeNet-5 main job ($(( $(date +%s) - start )) s elapsed)"
lenet_start=$(date +%s.%N)
if timeout 60 python3 train.py --config configs/lenet5.py --workdir "$(mktemp -d)/lenet5" --config.progress_bar=False \
    > "$OUT/lenet5.log" 2>&1; then
  lenet_wall=$(python3 -c "print(round($(date +%s.%N) - $lenet_start, 1))")
  grep -E "Finished|accuracy" "$OUT/lenet5.log"
  echo "{\"job\": \"lenet5 main job\", \"wall_s\": $lenet_wall}" | tee -a "$rows"
else
  echo "LeNet-5 main job FAILED"; tail -5 "$OUT/lenet5.log"
fi

# With time to spare inside the 8 minutes: how throughput scales with the batch (half the batch), and the memory
# rematerialisation saves on a device whose scheduler honours it (XLA:CPU's does not: benchmarks/README.md).
if [ "${SMOKE:-0}" != 1 ] && [ $(( $(date +%s) - start )) -lt 380 ]; then
  bench $(( 470 - ($(date +%s) - start) )) --model resnet50 --batch_size 256 --steps 30
fi
if [ "${SMOKE:-0}" != 1 ] && [ $(( $(date +%s) - start )) -lt 400 ]; then
  bench $(( 470 - ($(date +%s) - start) )) --model densenet121 --batch_size 256 --steps 10 --override remat=True
fi

# Scanning ResNet-152's identical blocks: tracing, compilation and step time against the unrolled network (on a
# CPU the scan cuts tracing 5x and doubles the step: benchmarks/README.md, "Compile time").
if [ "${SMOKE:-0}" != 1 ] && [ $(( $(date +%s) - start )) -lt 420 ]; then
  echo "--- scan_blocks resnet152 ($(( $(date +%s) - start )) s elapsed)"
  timeout $(( 475 - ($(date +%s) - start) )) python3 benchmarks/scan_blocks.py --model resnet152 --image_size 224 \
    --batch_size 64 --steps 10 2> "$OUT/scan.err" | tee "$OUT/scan_blocks.jsonl" || tail -3 "$OUT/scan.err"
fi

echo "=== summary ($(( $(date +%s) - start )) s in all)"
python3 - "$rows" <<'PY'
import json, sys
print(f"{'model':<14}{'batch':>6}{'img/s':>10}{'ms/step':>9}{'MFU':>7}{'peak MiB':>10}{'compile s':>10}")
for line in open(sys.argv[1]):
  r = json.loads(line)
  if "model" in r:
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
    print(f"{r['model']:<14}{r['batch_size']:>6}{r['images_per_sec']:>10.0f}{r['step_ms']:>9.1f}{mfu:>7}"
          f"{r['peak_memory_mb'] or 0:>10.0f}{r['compile_s']:>10.1f}")
  else:
    print(f"{r['job']}: {r['wall_s']} s wall")
PY
