#!/usr/bin/env bash
# Wall time and test accuracy of every config's :digits preset (the target: <= 120 s each on a 2-core CPU):
#   bash benchmarks/digits_presets.sh            # rows to benchmarks/results/digits_presets.jsonl
#   CONFIGS="resnet20_cifar vgg16" bash benchmarks/digits_presets.sh     # some of them
# Each run starts from an empty compilation cache and a fresh workdir, so the wall time includes compilation.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results/digits_presets.jsonl
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
ALL="resnet20_cifar mobilenet_v1 alexnet googlenet densenet121 densenet_bc_cifar resnet50 se_resnet50 vgg16 vgg19"
for config in ${CONFIGS:-$ALL}; do
  dir=$(mktemp -d)
  JAX_COMPILATION_CACHE_DIR="$dir/cache" python3 train.py --config "configs/$config.py:digits" --workdir "$dir/run" \
    --config.progress_bar=False > "$dir/log" 2>&1
  python3 - "$config" "$dir/run/summary.json" >> "$OUT" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
print(json.dumps({"config": sys.argv[1] + ":digits", "wall_seconds": round(s["wall_seconds"], 1),
                  "accuracy": s["eval/accuracy"], "steps": s["step"]}))
PY
  tail -1 "$OUT"
  rm -rf "$dir"
done
