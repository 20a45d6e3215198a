"""What each point of a model comparison costs to run: training and inference images/s, memory, compile time.

A sweep file that sets `BENCHMARK = {"batch_size": 32, "steps": 20}` asks for these figures: after its runs, each
point's model (at its run's input size, channels and classes) is timed by `cnn_flax.benchmark` in a fresh process,
once in training and once in inference mode, and the figures join the point's row in results.md/.csv. They are
cached in `benchmark.json`, so `--report` does not time them again.
"""
from __future__ import annotations

import json
import os
from typing import Any

from cnn_flax import benchmark

CACHE_FILE = "benchmark.json"
COLUMNS = ("bench_train_images_per_sec", "bench_eval_images_per_sec", "peak_memory_mb", "compile_s")


def _model_of(workdir: str, run_name: str) -> dict[str, Any] | None:
  """The model a run trained (name, module fields, input shape, classes), from its workdir."""
  try:
    with open(os.path.join(workdir, run_name, "config.json")) as f:
      config = json.load(f)
    with open(os.path.join(workdir, run_name, "summary.json")) as f:
      summary = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  size, _, channels = summary["image_shape"]
  return {"model_name": config["model"]["name"], "overrides": config["model"]["kwargs"], "image_size": size,
          "in_channels": channels, "num_classes": summary["num_classes"]}


def add(workdir: str, state: dict[str, Any], rows: list[dict], per_point: list[dict]) -> None:
  """Adds the benchmark columns to `per_point` (timing what the cache lacks) when the sweep asked for them."""
  settings = state.get("benchmark")
  if not settings:
    return
  path = os.path.join(workdir, CACHE_FILE)
  cache = json.load(open(path)) if os.path.exists(path) else {}
  for point in per_point:
    run = next((r["run"] for r in rows if r["point"] == point["point"] and r["status"] == "done"), None)
    model = _model_of(workdir, run) if run else None
    if model is None:
      continue
    key = json.dumps({**model, **settings}, sort_keys=True)
    if key not in cache:
      figures = {}
      for mode in ("train", "eval"):
        figures[mode] = benchmark.measure_in_subprocess(model["model_name"], mode=mode, dtype="auto",
                                                        overrides=model["overrides"],
                                                        **{k: v for k, v in model.items()
                                                           if k not in ("model_name", "overrides")}, **settings)
      cache[key] = figures
      with open(path + ".tmp", "w") as f:
        json.dump(cache, f, indent=2)
      os.replace(path + ".tmp", path)
    train, infer = cache[key]["train"], cache[key]["eval"]
    point.update({"bench_train_images_per_sec": train.get("images_per_sec"),
                  "bench_eval_images_per_sec": infer.get("images_per_sec"),
                  "peak_memory_mb": train.get("peak_memory_mb"), "compile_s": train.get("compile_s")})
