"""Throughput of a registered model's real jitted train (or eval) step, on synthetic data.

  python benchmarks/throughput.py --model resnet50 --batch_size 16 --image_size 224 --steps 10
  python benchmarks/throughput.py --model resnet50 --dtype bfloat16 --batch_size 256     # on a GPU
  python benchmarks/throughput.py --model resnet50 --peer torch --peer keras            # same model, same run
  python benchmarks/throughput.py --model all --batch_size 8 --image_size 64 --csv zoo.csv
  python benchmarks/throughput.py --model resnet50 --cache /tmp/jaxcache   # twice: the second is a warm start

What is timed, and how, is `cnn_flax.benchmark.measure`'s docstring. The last stdout line is one JSON object:
model, mode, batch_size, image_size, dtype, devices, images_per_sec, step_ms, compile_s (of which lower_s is tracing
and lowering), init_s (building the initial state), process_s (the whole process), peak_memory_mb (the
device's peak where the backend reports one, else XLA's estimate of the step's buffers), memory_source,
model_gflops_per_image, mfu (where the device's peak rate is known), and each peer's figures with the ratio.
`--model all` runs each registered model in its own process and writes one CSV row per model.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # a script in the checkout: import the checkout's cnn_flax

FIELDS = ("model", "mode", "batch_size", "image_size", "dtype", "devices", "images_per_sec", "step_ms",
          "compile_s", "lower_s", "init_s", "process_s", "peak_memory_mb", "memory_source", "model_gflops_per_image",
          "mfu", "page_faults_per_step", "huge_pages", "ratio_vs_torch", "ratio_vs_keras", "error")


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
  p.add_argument("--cache", default="", help="a persistent compilation cache dir (run twice: a warm start)")
  p.add_argument("--csv", default="", help="with --model all: where the rows go")
  p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="a model field")
  p.add_argument("--grad_accum_steps", type=int, default=1, help="microbatches per step")
  p.add_argument("--per_device_bn", action="store_true", help="BatchNorm statistics per device (bn_sync=False)")
  return p.parse_args(argv)


def per_model_flags(argv: list[str]) -> list[str]:
  """The command line less --model and --csv, in either spelling (`--csv f`, `--csv=f`): what each model's own
  process is given."""
  flags, skip = [], False
  for arg in argv:
    if skip:
      skip = False
    elif arg in ("--model", "--csv"):
      skip = True  # its value is the next argument
    elif not arg.startswith(("--model=", "--csv=")):
      flags.append(arg)
  return flags


def run_all(args) -> None:
  """One process per model, so that a crash or a memory peak stays with its model."""
  import subprocess

  from cnn_flax import models
  rows = []
  flags = per_model_flags(sys.argv[1:])
  for name in models.names():
    result = subprocess.run([sys.executable, os.path.abspath(__file__), f"--model={name}", *flags],
                            capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    row = json.loads(lines[-1]) if result.returncode == 0 and lines else {
        "model": name, "error": (result.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    print(json.dumps(row), flush=True)
    rows.append(row)
  if args.csv:
    with open(args.csv, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
      writer.writeheader()
      writer.writerows(rows)
    print(f"wrote {args.csv}", file=sys.stderr)


def main(argv=None) -> None:
  process_start = time.perf_counter()
  args = parse_args(argv)
  if args.model == "all":
    run_all(args)
    return
  import jax
  if args.cache:  # a warm start: the second run with the same cache loads the compiled step
    jax.config.update("jax_compilation_cache_dir", args.cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  from cnn_flax import benchmark, cli
  overrides = dict((o.partition("=")[0], cli.parse_literal(o.partition("=")[2])) for o in args.override)
  result = benchmark.measure(args.model, batch_size=args.batch_size, image_size=args.image_size,
                             num_classes=args.num_classes, steps=args.steps, warmup=args.warmup, dtype=args.dtype,
                             mode=args.mode, overrides=overrides, grad_accum_steps=args.grad_accum_steps,
                             per_device_bn=args.per_device_bn)
  result["process_s"] = round(time.perf_counter() - process_start, 2)  # imports + tracing + compile + steps
  print(f"{result['model']} {result['mode']} {result['dtype']} batch {result['batch_size']} at "
        f"{result['image_size']} px on {result['devices']} x {result['device_kind']}: "
        f"{result['images_per_sec']:.2f} images/s, {result['step_ms']:.1f} ms/step, compile {result['compile_s']} s",
        file=sys.stderr)
  for peer in args.peer:
    from benchmarks import peers
    figures = peers.measure_apart(peer, args.model, result["batch_size"], result["image_size"], args.steps, args.warmup,
                            args.mode)
    result[f"peer_{peer}"] = figures
    if figures.get("images_per_sec"):
      result[f"ratio_vs_{peer}"] = round(result["images_per_sec"] / figures["images_per_sec"], 3)
    print(f"  {peer}: {figures.get('images_per_sec', figures.get('skipped'))} images/s", file=sys.stderr)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  from cnn_flax import hugepages
  hugepages.reexec()  # the step as train.py runs it (cnn_flax/hugepages.py)
  main()
