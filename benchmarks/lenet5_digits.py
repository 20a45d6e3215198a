"""Time-to-accuracy of the main job: `python train.py --config configs/lenet5.py` on the bundled digits.

  python benchmarks/lenet5_digits.py [--runs 2]

Runs the real command in a subprocess, first with an empty compilation cache (a cold start, as on a fresh
machine), then again with the cache filled, and prints wall time (imports included), final test accuracy and
the training throughput from metrics.jsonl. Also times the bare jitted train step. Targets (issue 2):
>= 98% test accuracy in <= 60 s wall, cold start included; aim <= 20 s.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_main_job(cache_dir: str) -> dict:
  workdir = tempfile.mkdtemp(prefix="lenet5_bench_")
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache_dir, "JAX_PLATFORMS": "cpu"}
  start = time.perf_counter()
  result = subprocess.run([sys.executable, "train.py", "--config", "configs/lenet5.py", "--workdir", workdir,
                           "--config.progress_bar=False"], cwd=ROOT, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - start
  if result.returncode:
    sys.exit(f"train.py failed:\n{result.stderr[-2000:]}")
  accuracy = float(re.search(r"accuracy ([\d.]+)%", result.stdout).group(1))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  rates = [r["train/images_per_sec"] for r in rows if "train/images_per_sec" in r]
  return {"wall_s": wall, "test_accuracy_pct": accuracy,
          "train_images_per_sec_median": sorted(rates)[len(rates) // 2] if rates else None}


def bare_step_throughput(batch_size: int = 64, iters: int = 200) -> float:
  import jax
  import jax.numpy as jnp

  from cnn_flax import experiment, parallel, steps
  from configs import lenet5
  config = lenet5.get_config()
  exp = experiment.build(config)
  mesh = parallel.make_mesh()
  rep, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  shardings = jax.tree.map(lambda _: rep, exp.abstract_state)
  state = jax.jit(exp.init_state, out_shardings=shardings)(jax.random.key(0))
  train, _ = steps.make_jitted_steps(exp.step_config, shardings, sharded, rep, jnp.float32)
  src = exp.dataset.splits["train"]
  batch = parallel.global_batch({"image": src.images[:batch_size], "label": src.labels[:batch_size]}, sharded)
  state, m = train(state, batch, {})
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(iters):
    state, m = train(state, batch, {})
  jax.block_until_ready(m)
  return batch_size * iters / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", type=int, default=2, help="runs after the cold one, with a warm cache")
  args = parser.parse_args()
  cache = tempfile.mkdtemp(prefix="jax_cache_")
  print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}")
  for i in range(1 + args.runs):
    figures = run_main_job(cache)
    label = "cold cache" if i == 0 else "warm cache"
    print(f"main job ({label}): {figures['wall_s']:.1f} s wall, test accuracy {figures['test_accuracy_pct']:.2f}%, "
          f"median train throughput {figures['train_images_per_sec_median']:.0f} images/s", flush=True)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  print(f"bare jitted train step, batch 64: {bare_step_throughput():.0f} images/s")


if __name__ == "__main__":
  main()
