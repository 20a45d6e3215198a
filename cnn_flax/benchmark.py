"""Throughput of a registered model's real jitted step on synthetic data: images/s, compile time, memory, MFU.

The step is `steps.make_jitted_steps`, exactly what train.py runs (normalisation, loss, the optimizer update, the
donated state, the batch sharded over every device), fed uint8 batches already on the device, so the figure is the
step's and not the input pipeline's. Compilation is timed on its own (`lower().compile()`); then `warmup` steps run,
then `steps` steps are timed with `block_until_ready` on the last outputs (JAX dispatches asynchronously: a timer
that does not wait measures nothing). `benchmarks/throughput.py` is the command line; the model comparison of the
study (`sweeps`) calls `measure_in_subprocess` so that every model is timed in a fresh process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from cnn_flax import gcpause, hugepages

try:
  import resource
except ImportError:  # not on Windows
  resource = None

# Dense bf16 / fp32 peak FLOP/s by device kind (vendor datasheets), for model-FLOPs utilisation.
PEAK_FLOPS = {"H200": {"bfloat16": 989e12, "float32": 67e12}, "H100": {"bfloat16": 989e12, "float32": 67e12},
              "A100": {"bfloat16": 312e12, "float32": 19.5e12}}


def _synthetic_batch(batch_size: int, image_shape, num_classes: int, sharding, mode: str):
  import jax
  import numpy as np
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (batch_size, *image_shape), dtype=np.uint8),
           "label": rng.integers(0, num_classes, (batch_size,), dtype=np.int32)}
  if mode == "eval":
    batch["mask"] = np.ones((batch_size,), bool)
  return jax.device_put(batch, sharding)


def _minor_page_faults() -> int:
  """The process's page faults served without I/O: first touches of fresh memory (cnn_flax/hugepages.py)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def _memory(compiled) -> tuple[float | None, str]:
  """(MiB, source): the device's peak where it reports one (GPU, TPU), else XLA's estimate of the step's buffers."""
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20, "device_peak"
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None, "unknown"
  total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
           - analysis.alias_size_in_bytes)
  return total / 2**20, "xla_estimate"


def measure(model_name: str, *, batch_size: int = 16, image_size: int = 0, num_classes: int = 0,
            in_channels: int = 0, steps: int = 10, warmup: int = 2, dtype: str = "auto", mode: str = "train",
            overrides: dict[str, Any] | None = None, grad_accum_steps: int = 1,
            per_device_bn: bool = False, trace_dir: str | None = None) -> dict[str, Any]:
  """Times the train (or eval) step of `model_name` in this process.

  Args:
    model_name: a registered model; `overrides` are its module fields.
    batch_size: the global batch (split over every device).
    image_size, num_classes, in_channels: 0 = the model's reference size, 10 for 32 px models / 1000 otherwise,
      the reference channels.
    steps, warmup: timed steps, untimed steps after compilation.
    dtype: "auto" (bfloat16 on GPU/TPU, float32 on CPU), "float32" or "bfloat16".
    mode: "train" (forward, backward, SGD update) or "eval" (forward, sums).
    grad_accum_steps: microbatches per step (config.grad_accum_steps).
    per_device_bn: each device normalises its own shard (config.model.bn_sync=False).
    trace_dir: where a `jax.profiler` trace of the timed steps goes, with the compiled step's HLO text
      (`step.hlo.txt`, to name the trace's fusions; `benchmarks/step_profile.py` reads both).
  Returns:
    model, mode, batch_size, image_size, dtype, devices, device_kind, images_per_sec, step_ms, compile_s (tracing,
    lowering and compilation; lower_s: the first two, which a warm persistent cache cannot skip; init_s: building
    the initial state, its tracing and compilation included),
    peak_memory_mb, memory_source, model_gflops_per_image (2 x MACs forward, x3 for training) and mfu (None where
    the device's peak rate is not known).
  """
  import jax
  import jax.numpy as jnp

  from cnn_flax import models, optim, parallel, schema, summary
  from cnn_flax import steps as step_fns  # `steps` is the number of timed steps here
  from cnn_flax.experiment import resolve_dtype

  overrides = dict(overrides or {})
  info = models.info(model_name)
  size = image_size or info.input_size
  channels = in_channels or info.in_channels
  num_classes = num_classes or summary.default_num_classes(info)
  compute_dtype = resolve_dtype(dtype)
  model = models.create(model_name, num_classes=num_classes, dtype=compute_dtype, **overrides)
  tx = optim.make_optimizer(schema.base_config(), lambda _: 0.01)  # the default: SGD with momentum 0.9
  mesh = parallel.make_mesh()
  cfg = step_fns.StepConfig(model=model, tx=tx, mean=(127.5,) * channels, std=(64.0,) * channels,
                            num_classes=num_classes, update=step_fns.UpdateConfig(grad_accum_steps=grad_accum_steps),
                            bn_mesh=mesh if per_device_bn else None)
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  image_shape = (size, size, channels)
  init = lambda rng: step_fns.init_state(cfg, image_shape, rng)
  start = time.perf_counter()
  state_sharding = jax.tree.map(lambda _: replicated, step_fns.state_shapes(init))
  state = jax.block_until_ready(step_fns.initialise(init, state_sharding, jax.random.key(0)))
  init_s = time.perf_counter() - start  # the state's shapes, then the jitted initialisation: part of every start
  train, evaluate = step_fns.make_jitted_steps(cfg, state_sharding, sharded, replicated, compute_dtype)
  batch = _synthetic_batch(batch_size, image_shape, num_classes, sharded, mode)

  start = time.perf_counter()
  with gcpause.paused():  # as in train.py, where the step's first call traces and compiles it
    # Tracing and lowering to StableHLO happen on every start; the persistent cache can only skip what follows.
    lowered = train.lower(state, batch, {}) if mode == "train" else evaluate.lower(state, batch)
    lower_s = time.perf_counter() - start
    compiled = lowered.compile()
  run = (lambda s: compiled(s, batch, {})) if mode == "train" else (lambda s: (s, compiled(s, batch)))
  compile_s = time.perf_counter() - start
  out = None
  for _ in range(warmup):
    state, out = run(state)
  jax.block_until_ready(state)
  if trace_dir:
    os.makedirs(trace_dir, exist_ok=True)
    with open(os.path.join(trace_dir, "step.hlo.txt"), "w") as f:
      f.write(compiled.as_text())
    jax.profiler.start_trace(trace_dir)
  faults_before = _minor_page_faults()
  start = time.perf_counter()
  for _ in range(steps):
    state, out = run(state)
  jax.block_until_ready((state, out))
  elapsed = time.perf_counter() - start
  faults = _minor_page_faults() - faults_before
  if trace_dir:
    jax.profiler.stop_trace()

  images_per_sec = steps * batch_size / elapsed
  memory_mb, memory_source = _memory(compiled)
  macs = summary.model_stats(model_name, size, num_classes, channels, **overrides)["macs"]
  # Model FLOPs: 2 per multiply-accumulate forward; training adds the backward pass, about twice the forward.
  flops_per_image = 2 * macs * (3 if mode == "train" else 1)
  kind = jax.devices()[0].device_kind
  dtype_name = jnp.dtype(compute_dtype).name
  peak = next((rates.get(dtype_name) for name, rates in PEAK_FLOPS.items() if name in kind), None)
  peak_total = None if peak is None else peak * jax.device_count()
  return {"model": model_name, "mode": mode, "batch_size": batch_size, "image_size": size, "dtype": dtype_name,
          "devices": jax.device_count(), "device_kind": kind, "images_per_sec": round(images_per_sec, 3),
          "step_ms": round(1000 * elapsed / steps, 3), "compile_s": round(compile_s, 2), "lower_s": round(lower_s, 2),
          "init_s": round(init_s, 2), "page_faults_per_step": round(faults / steps),
          "huge_pages": hugepages.in_effect(),
          "peak_memory_mb": None if memory_mb is None else round(memory_mb, 1), "memory_source": memory_source,
          "model_gflops_per_image": float(f"{flops_per_image / 1e9:.4g}"),  # 4 significant figures: LeNet is 0.0008
          "mfu": None if peak_total is None else float(f"{images_per_sec * flops_per_image / peak_total:.4g}")}


def measure_in_subprocess(model_name: str, timeout: float = 1800, **kwargs) -> dict[str, Any]:
  """`measure` in a fresh Python process (its own compilation, its own memory peak); {"error": ...} on failure."""
  code = ("import json, sys; from cnn_flax import benchmark; "
          "print(json.dumps(benchmark.measure(sys.argv[1], **json.loads(sys.argv[2]))))")
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this copy of cnn_flax
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
  try:
    result = subprocess.run([sys.executable, "-c", code, model_name, json.dumps(kwargs)], capture_output=True,
                            text=True, timeout=timeout, env=env)
  except subprocess.TimeoutExpired:
    return {"model": model_name, "error": f"timed out after {timeout:.0f} s"}
  lines = result.stdout.strip().splitlines()
  if result.returncode or not lines:
    return {"model": model_name, "error": (result.stderr.strip().splitlines() or ["failed"])[-1][:300]}
  return json.loads(lines[-1])
