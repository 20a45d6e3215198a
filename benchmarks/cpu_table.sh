#!/usr/bin/env bash
# The CPU figures of benchmarks/README.md, in one sitting (about an hour on a 2-core CPU):
#   bash benchmarks/cpu_table.sh [PYTHON [SECTION ...]]   # PYTHON: an interpreter with torch/torchvision for the peers
#   bash benchmarks/cpu_table.sh python3 compile          # one section: peers, fastconv, onednn, onednn_bn,
#                                                         # hugepages, memory, compile, bn_sync
# Rows go to benchmarks/results/<section>.jsonl (a section rewrites its own file only); every figure is one process
# of benchmarks/throughput.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
SECTIONS=" ${*:2} "
OUT=benchmarks/results
mkdir -p "$OUT"
tp() { "$PY" benchmarks/throughput.py "$@" 2>/dev/null | tail -1; }
want() { [ "$SECTIONS" = "  " ] || [[ "$SECTIONS" == *" $1 "* ]]; }

# One row of the 224 px, batch 16 training-step table: 5 timed steps (VGG-16: 3) after one warm-up.
row224() { local m=$1 steps=5; shift; [ "$m" = vgg16 ] && steps=3
  tp --model "$m" --batch_size 16 --image_size 224 --steps $steps --warmup 1 "$@"; }
ZOO6="resnet50 vgg16 densenet121 resnet18 alexnet mobilenet_v1"

if want peers; then
  : > "$OUT/peers.jsonl"   # cnn_flax against PyTorch and Keras 3 on JAX, 224 px, batch 16, float32, training step
  for m in $ZOO6; do row224 $m --peer torch --peer keras >> "$OUT/peers.jsonl"; done
  # The CIFAR DenseNet-BC-100 at its own size and batch (peers.py builds PyTorch's; Keras has none)
  tp --model densenet_bc_100 --batch_size 64 --image_size 32 --steps 8 --warmup 2 --peer torch >> "$OUT/peers.jsonl"
fi

if want fastconv; then
  : > "$OUT/fastconv.jsonl"   # every CPU fast path off (CNN_FLAX_FAST_CONV=0, oneDNN's too), same settings
  for m in resnet50 vgg16 densenet121 mobilenet_v1; do CNN_FLAX_FAST_CONV=0 row224 $m >> "$OUT/fastconv.jsonl"; done
fi

if want onednn_bn; then
  : > "$OUT/onednn_bn.jsonl"   # BatchNorm in XLA, convolutions still in oneDNN (CNN_FLAX_ONEDNN_BATCHNORM=0)
  for m in $ZOO6; do CNN_FLAX_ONEDNN_BATCHNORM=0 row224 $m >> "$OUT/onednn_bn.jsonl"; done
fi

if want onednn; then
  : > "$OUT/onednn.jsonl"   # oneDNN's convolutions off (CNN_FLAX_ONEDNN=0: XLA's paths), same settings as peers
  for m in $ZOO6; do CNN_FLAX_ONEDNN=0 row224 $m >> "$OUT/onednn.jsonl"; done
fi

if want hugepages; then
  : > "$OUT/hugepages.jsonl"   # malloc with 4 KB pages (CNN_FLAX_HUGE_PAGES=0: no restart), same settings as peers
  for m in $ZOO6; do CNN_FLAX_HUGE_PAGES=0 row224 $m >> "$OUT/hugepages.jsonl"; done
fi

if want memory; then
  : > "$OUT/memory.jsonl"   # XLA's buffer estimate of the training step: rematerialisation, accumulation
  tp --model densenet121 --batch_size 16 --image_size 224 --steps 1 --warmup 0 >> "$OUT/memory.jsonl"
  tp --model densenet121 --batch_size 16 --image_size 224 --steps 1 --warmup 0 --override remat=True >> "$OUT/memory.jsonl"
  tp --model resnet50 --batch_size 32 --image_size 224 --steps 1 --warmup 0 >> "$OUT/memory.jsonl"
  tp --model resnet50 --batch_size 32 --image_size 224 --steps 1 --warmup 0 --grad_accum_steps 4 >> "$OUT/memory.jsonl"
fi

if want compile; then
  : > "$OUT/compile.jsonl"   # cold (empty persistent cache) then warm (the same cache) compile and process time
  for m in resnet50 vgg16 densenet121 mobilenet_v1 resnet152 densenet201; do
    cache=$(mktemp -d)
    for start in cold warm; do
      tp --model $m --batch_size 16 --image_size 224 --steps 1 --warmup 0 --cache "$cache" \
        | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); r['start']='$start'; print(json.dumps(r))" \
        >> "$OUT/compile.jsonl"
    done
    rm -rf "$cache"
  done
fi

if want bn_sync; then
  : > "$OUT/bn_sync.jsonl"   # global against per-device BatchNorm statistics on 4 (fake) CPU devices
  for flag in "" "--per_device_bn"; do
    XLA_FLAGS=--xla_force_host_platform_device_count=4 tp --model resnet20 --batch_size 128 --steps 10 $flag \
      >> "$OUT/bn_sync.jsonl"
  done
fi
echo done
