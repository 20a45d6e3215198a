"""Throughput of a registered model's real jitted train (or eval) step, on synthetic data.

  python benchmarks/throughput.py --model resnet50 --batch_size 16 --image_size 224 --steps 10
  python benchmarks/throughput.py --model resnet50 --dtype bfloat16 --batch_size 256     # on a GPU
  python benchmarks/throughput.py --model resnet50 --peer torch --peer keras            # same model, same run
  python benchmarks/throughput.py --model all --batch_size 8 --image_size 64 --csv zoo.csv

The step is `cnn_flax.steps.make_jitted_steps`, exactly what train.py runs (normalisation, loss, optimizer update,
donated state, the batch sharded over every device), fed uint8 batches already on the device. Compilation is timed
on its own (`lower().compile()`; `--cache DIR` turns JAX's persistent cache on to time a warm start); then
`--warmup` steps run, then `--steps` steps are timed with `block_until_ready` on the last outputs (JAX dispatches
asynchronously: a timer that does not wait measures nothing).

The last stdout line is one JSON object: model, mode, batch_size, image_size, dtype, devices, images_per_sec,
step_ms, compile_s, peak_memory_mb (device peak where the backend reports one, else XLA's estimate of the step's
buffers), memory_source, model_gflops_per_image, mfu (where the device's peak rate is known), and the peers' figures.
`--model all` runs each registered model in its own process and writes one CSV row per model.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # a script in the checkout: import the checkout's cnn_flax

# Dense bf16 / fp32 peak FLOP/s by device kind (vendor datasheets), for model-FLOPs utilisation.
PEAK_FLOPS = {"H200": {"bfloat16": 989e12, "float32": 67e12}, "H100": {"bfloat16": 989e12, "float32": 67e12},
              "A100": {"bfloat16": 312e12, "float32": 19.5e12}}
FIELDS = ("model", "mode", "batch_size", "image_size", "dtype", "devices", "images_per_sec", "step_ms",
          "compile_s", "peak_memory_mb", "memory_source", "model_gflops_per_image", "mfu", "peer_torch",
          "peer_keras")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", required=True, help="a registered name, or 'all'")
  p.add_argument("--batch_size", type=int, default=16, help="global batch")
  p.add_argument("--image_size", type=int, default=0, help="0 = the model's reference size")
  p.add_argument("--num_classes", type=int, default=0, help="0 = 10 for 32 px models, else 1000")
  p.add_argument("--steps", type=int, default=10, help="timed steps")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
  p.add_argument("--mode", default="train", choices=("train", "eval"))
  p.add_argument("--peer", action="append", default=[], choices=("torch", "keras"),
                 help="time the same model in PyTorch (torchvision) or Keras 3 on JAX in this run")
  p.add_argument("--cache", default="", help="a persistent compilation cache dir (time a warm start)")
  p.add_argument("--csv", default="", help="with --model all: where the rows go")
  p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="a model field")
  return p.parse_args(argv)


def _parse_override(text: str):
  import ast
  key, _, value = text.partition("=")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def _synthetic_batch(batch_size, image_shape, num_classes, sharding, mode):
  import jax
  import numpy as np
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (batch_size, *image_shape), dtype=np.uint8),
           "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32)}
  if mode == "eval":
    batch["mask"] = np.ones((batch_size,), bool)
  return jax.device_put(batch, sharding)


def _memory(compiled):
  """(megabytes, source): the device's peak where it reports one (GPU, TPU), else XLA's buffer estimate."""
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20, "device_peak"
  m = compiled.memory_analysis()
  if m is None:
    return None, "unknown"
  total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  return total / 2**20, "xla_estimate"


def measure(args) -> dict:
  import jax
  import jax.numpy as jnp
  if args.cache:
    jax.config.update("jax_compilation_cache_dir", args.cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  from cnn_flax import models, optim, parallel, schema, steps, summary
  from cnn_flax.experiment import resolve_dtype

  info = models.info(args.model)
  size = args.image_size or info.input_size
  num_classes = args.num_classes or summary.default_num_classes(info)
  dtype = resolve_dtype(args.dtype)
  overrides = dict(_parse_override(o) for o in args.override)
  model = models.create(args.model, num_classes=num_classes, dtype=dtype, **overrides)
  config = schema.base_config()  # the default optimizer: SGD with momentum 0.9
  tx = optim.make_optimizer(config, lambda _: 0.01)
  channels = info.in_channels
  cfg = steps.StepConfig(model=model, tx=tx, mean=(127.5,) * channels, std=(64.0,) * channels,
                         num_classes=num_classes)
  mesh = parallel.make_mesh()
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  image_shape = (size, size, channels)
  init = lambda rng: steps.init_state(cfg, image_shape, rng)
  state_sharding = jax.tree.map(lambda _: replicated, jax.eval_shape(init, jax.random.key(0)))
  state = jax.jit(init, out_shardings=state_sharding)(jax.random.key(0))
  train, evaluate = steps.make_jitted_steps(cfg, state_sharding, sharded, replicated, dtype)
  batch = _synthetic_batch(args.batch_size, image_shape, num_classes, sharded, args.mode)

  start = time.perf_counter()
  if args.mode == "train":
    compiled = train.lower(state, batch, {}).compile()
    run = lambda s: compiled(s, batch, {})
  else:
    compiled = evaluate.lower(state, batch).compile()
    run = lambda s: (s, compiled(s, batch))
  compile_s = time.perf_counter() - start
  for _ in range(args.warmup):
    state, out = run(state)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, out = run(state)
  jax.block_until_ready((state, out))
  elapsed = time.perf_counter() - start

  images_per_sec = args.steps * args.batch_size / elapsed
  memory_mb, memory_source = _memory(compiled)
  macs = summary.model_stats(args.model, size, num_classes, channels, **overrides)["macs"]
  # Model FLOPs: 2 per multiply-accumulate forward; training adds the backward pass, about twice the forward.
  flops_per_image = 2 * macs * (3 if args.mode == "train" else 1)
  kind = jax.devices()[0].device_kind
  peak = next((rates.get(jnp.dtype(dtype).name) for name, rates in PEAK_FLOPS.items() if name in kind), None)
  return {"model": args.model, "mode": args.mode, "batch_size": args.batch_size, "image_size": size,
          "dtype": jnp.dtype(dtype).name, "devices": jax.device_count(), "device_kind": kind,
          "images_per_sec": round(images_per_sec, 3), "step_ms": round(1000 * elapsed / args.steps, 3),
          "compile_s": round(compile_s, 2),
          "peak_memory_mb": None if memory_mb is None else round(memory_mb, 1), "memory_source": memory_source,
          "model_gflops_per_image": round(flops_per_image / 1e9, 4),
          "mfu": None if peak is None else round(images_per_sec * flops_per_image / (peak * jax.device_count()), 4)}


def run_all(args) -> None:
  """One process per model, so that a crash or a device-memory peak stays with its model."""
  from cnn_flax import models
  rows = []
  for name in models.names():
    cmd = [sys.executable, os.path.abspath(__file__), "--model", name, *_forward_flags(args)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode == 0 and lines:
      row = json.loads(lines[-1])
    else:
      row = {"model": name, "error": (result.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    print(json.dumps(row), flush=True)
    rows.append(row)
  if args.csv:
    with open(args.csv, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=[*FIELDS, "error"], extrasaction="ignore")
      writer.writeheader()
      writer.writerows(rows)
    print(f"wrote {args.csv}", file=sys.stderr)


def _forward_flags(args) -> list[str]:
  flags = [f"--batch_size={args.batch_size}", f"--image_size={args.image_size}", f"--steps={args.steps}",
           f"--warmup={args.warmup}", f"--dtype={args.dtype}", f"--mode={args.mode}",
           f"--num_classes={args.num_classes}"]
  flags += [f"--peer={p}" for p in args.peer] + [f"--override={o}" for o in args.override]
  return flags + ([f"--cache={args.cache}"] if args.cache else [])


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.model == "all":
    run_all(args)
    return
  result = measure(args)
  print(f"{result['model']} {result['mode']} {result['dtype']} batch {result['batch_size']} at "
        f"{result['image_size']} px on {result['devices']} x {result['device_kind']}: "
        f"{result['images_per_sec']:.2f} images/s, {result['step_ms']:.1f} ms/step, compile {result['compile_s']} s",
        file=sys.stderr)
  for peer in args.peer:
    from benchmarks import peers
    figures = peers.measure(peer, args.model, result["batch_size"], result["image_size"], args.steps, args.warmup,
                            args.mode)
    result[f"peer_{peer}"] = figures
    if figures.get("images_per_sec"):
      result[f"ratio_vs_{peer}"] = round(result["images_per_sec"] / figures["images_per_sec"], 3)
    print(f"  {peer}: {figures.get('images_per_sec', figures.get('skipped'))}", file=sys.stderr)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
