#!/usr/bin/env bash
# Wall time and test accuracy of every config's :digits preset (the target: <= 120 s each on a 2-core CPU):
#   bash benchmarks/digits_presets.sh            # rows appended to benchmarks/results/digits_presets.jsonl
#   CONFIGS="resnet20_cifar vgg16" bash benchmarks/digits_presets.sh     # some of them
# Each run starts from an empty compilation cache and a fresh workdir, so the wall time includes compilation.
# Rows are appended (with the date), so a run of some presets keeps the rows measured before.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results/digits_presets.jsonl
mkdir -p "$(dirname "$OUT")"
ALL="resnet20_cifar mobilenet_v1 alexnet googlenet densenet121 densenet_bc_cifar resnet50 se_resnet50 vgg16 vgg19"
for config in ${CONFIGS:-$ALL}; do
  dir=$(mktemp -d)
  JAX_COMPILATION_CACHE_DIR="$dir/cache" python3 train.py --config "configs/$config.py:digits" --workdir "$dir/run" \
    --config.progress_bar=False > "$dir/log" 2>&1
  python3 - "$config" "$dir/run/summary.json" "$dir/log" >> "$OUT" <<'PY'
import datetime, json, os, sys
row = {"config": sys.argv[1] + ":digits", "date": datetime.date.today().isoformat()}
if os.path.exists(sys.argv[2]):
  s = json.load(open(sys.argv[2]))
  row.update(wall_seconds=round(s["wall_seconds"], 1), accuracy=s["eval/accuracy"], steps=s["step"],
             image_size=s["image_shape"][0])
else:
  row["error"] = "train.py wrote no summary.json: " + (open(sys.argv[3]).read().strip().splitlines() or ["(empty log)"])[-1][:200]
print(json.dumps(row))
PY
  tail -1 "$OUT"
  rm -rf "$dir"
done
