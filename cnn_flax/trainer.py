"""`train_and_evaluate(config, workdir)`: one linear training run, in marked sections.

checks -> devices -> data -> model & optimizer -> state & checkpoint restore -> steps -> loop -> summary.
Nothing is written to the workdir until every check has passed, so a bad command never touches an
earlier run's checkpoints or metrics.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from cnn_flax import checkpoint, experiment, loop, metrics, parallel, steps
from cnn_flax import config as config_lib
from cnn_flax.data import pipeline
from cnn_flax.errors import TrainingStopped, UserError
from cnn_flax.evaluator import evaluate

CONFIG_FILE, CHECKPOINT_DIR = checkpoint.CONFIG_FILE, checkpoint.CHECKPOINT_DIR
SUMMARY_FILE = "summary.json"  # the last invocation's summary (what train.py prints at the end), for sweeps


def check_workdir(workdir: str, config: ml_collections.ConfigDict) -> bool:
  """Raises UserError if `workdir` cannot hold this run; returns True when it holds this run already."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir {workdir!r} is a file, not a directory; pass a directory path")
  existing = os.path.isdir(workdir)
  probe = workdir if existing else os.path.dirname(os.path.abspath(workdir))
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.access(probe, os.W_OK):
    raise UserError(f"--workdir {workdir!r} is not writable; choose a directory you can write to")
  config_path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(config_path):
    try:
      with open(config_path) as f:
        saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise UserError(f"{config_path} is unreadable ({e}); use another --workdir") from None
    diffs = config_lib.identity_differences(saved, config)
    if diffs:
      raise UserError(f"--workdir {workdir!r} holds another run ({'; '.join(diffs)}); "
                      f"resume it with its own settings or choose another --workdir")
    return True
  if existing and any(os.path.exists(os.path.join(workdir, f)) for f in (CHECKPOINT_DIR, metrics.METRICS_FILE)):
    raise UserError(f"--workdir {workdir!r} holds checkpoints or metrics but no {CONFIG_FILE}; "
                    f"choose another --workdir")
  return False


def _write_json_atomically(path: str, data: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from the workdir's latest checkpoint if it has one.

  Usable from a notebook or script as well as through train.py: `config` is any config built from
  `cnn_flax.schema.base_config()` (a recipe's `get_config()`, or your own), validated here before anything is
  written.

  Args:
    config: the run's config.
    workdir: where config.json, metrics.jsonl, TensorBoard events, checkpoints and summary.json (this summary)
      go; created if missing.
  Returns:
    The summary: `step`, `total_steps`, `wall_seconds`, `workdir`, `checkpoints`, `latest_step`, `best_step`,
    `feed` ("device": the split lives on the accelerator; "host": Grain feeds records), `dtype` (compute),
    `num_classes`, `image_shape`, `train_examples` and the final evaluation (`eval/accuracy`,
    `eval/top5_accuracy`, `eval/loss`, `eval/num_examples`).
  Raises:
    UserError: the config, the workdir or the data cannot work (nothing was written).
    TrainingDiverged: the loss or the parameters became non-finite (no diverged state was saved).
    TrainingStopped: SIGTERM arrived; a checkpoint was saved and the same call resumes from it.
  """
  wall_start = time.perf_counter()

  # --- Checks: config and workdir (nothing is written before these pass) -----------------------
  config_lib.validate(config)
  resuming = check_workdir(workdir, config)

  # --- Devices ---------------------------------------------------------------------------------
  devices = parallel.start(config.eval_batch_size, config.batch_size)
  local_batch = parallel.local_batch_size(config.batch_size)
  replicated, batch_sharding = devices.replicated, devices.batch_sharded
  is_chief = jax.process_index() == 0

  # --- Data, model, optimizer --------------------------------------------------------------------
  exp = experiment.build(config, mesh=devices.mesh)
  dataset, schedule, total_steps = exp.dataset, exp.schedule, exp.total_steps
  train_source = dataset.split(config.dataset.train_split)
  eval_source = dataset.split(config.dataset.eval_split)
  shard = dict(local_batch_size=local_batch, seed=config.seed, process_index=jax.process_index(),
               process_count=jax.process_count())
  if exp.on_device:  # the split goes to the accelerator once; Grain only yields indices
    train_iter = pipeline.index_iterator(len(train_source), **shard)
    train_data = jax.device_put(pipeline.load_split_into_memory(train_source, dataset.image_shape), replicated)
  else:
    train_iter = pipeline.train_iterator(train_source, image_shape=dataset.image_shape,
                                         num_workers=config.dataset.num_workers, augment=exp.host_augment, **shard)
    train_data = {}

  # --- State: fresh or restored ------------------------------------------------------------------
  # From here on the workdir is written to.
  if is_chief:
    os.makedirs(workdir, exist_ok=True)
  abstract_state = exp.abstract_state
  state_sharding = jax.tree.map(lambda _: replicated, abstract_state)
  warn = (lambda line: print(line, file=sys.stderr, flush=True)) if is_chief else (lambda line: None)
  ckpt, state, start_step = checkpoint.restore_latest_good(
      os.path.join(workdir, CHECKPOINT_DIR), config.keep_checkpoints,
      checkpoint.abstract_with_shardings(abstract_state, state_sharding), train_iter, warn)
  if start_step is None:
    start_step = 0
    state = steps.initialise(exp.init_state, state_sharding, jax.random.key(config.seed))
    if config.init_from:
      state = _start_from_pretrained(state, config.init_from, exp, state_sharding, is_chief)
  if is_chief:
    _write_json_atomically(os.path.join(workdir, CONFIG_FILE), config.to_dict())
    if resuming:
      metrics.rewind(workdir, start_step)

  # --- Steps ---------------------------------------------------------------------------------------
  train_step, eval_step = steps.make_jitted_steps(exp.step_config, state_sharding, batch_sharding, replicated,
                                                   exp.dtype)
  state_is_finite = jax.jit(lambda s: steps.all_finite(s.params))
  evaluate_now = lambda state: _evaluate(eval_step, state, eval_source, config, dataset.image_shape,
                                         batch_sharding, ema=bool(config.ema_decay))

  # --- Loop ------------------------------------------------------------------------------------------
  writer = metrics.MetricsWriter(workdir, enabled=is_chief)
  progress = metrics.Progress(total_steps, start_step, enabled=is_chief and config.progress_bar)
  log = loop.TrainLog(writer, progress, schedule, ckpt.directory,
                      last_saved=start_step if ckpt.latest_step() is not None else None)
  final_eval = None
  stop_signal = parallel.StopSignal()
  profile_start, profile_end = tuple(config.profile_steps) if config.profile_steps[0] > start_step else (0, 0)
  tracing = False
  try:
    for step in range(start_step + 1, total_steps + 1):  # `step` = optimizer steps done after this one
      # The previous step was dispatched asynchronously: the host prepares this batch while the device runs.
      if step == profile_start:
        jax.profiler.start_trace(workdir)  # TensorBoard reads WORKDIR/plugins/profile; Perfetto the .trace.json.gz
        tracing = True
      batch = parallel.global_batch(next(train_iter), batch_sharding)
      state, step_metrics = train_step(state, batch, train_data)
      log.add(step, step_metrics, config.batch_size, first=step == start_step + 1)
      if step == profile_end:
        jax.block_until_ready(state)  # the trace must hold these steps' device work, not only their dispatch
        jax.profiler.stop_trace()
        tracing = False

      todo = loop.actions_at(step, total_steps, log_every=config.log_every_steps,
                             eval_every=config.eval_every_steps, checkpoint_every=config.checkpoint_every_steps,
                             process_count=jax.process_count())
      stopping = todo.check_stop and stop_signal.requested()
      if todo.log or stopping:
        log.flush(step)
      # The parameters can turn non-finite in a step whose loss (computed before the update) was finite: check them
      # before they are evaluated or saved, so that no NaN is logged and no diverged state is written.
      if (todo.evaluate or todo.save or stopping) and not bool(state_is_finite(state)):
        raise log.diverged_parameters(step)
      eval_result = None
      if todo.evaluate:
        eval_result = evaluate_now(state)
        log.evaluated(step, eval_result)
      if todo.save or stopping:
        ckpt.save(step, state, train_iter, config.to_dict(), eval_result)
        log.last_saved = step
      if stopping:
        raise TrainingStopped(f"SIGTERM received; saved a checkpoint of step {step} of {total_steps} in "
                              f"{ckpt.directory}; rerun the same command to resume")
      if step == total_steps:
        final_eval = eval_result
  finally:
    if tracing:  # the run ended inside the profiled range
      jax.profiler.stop_trace()
    stop_signal.restore()
    train_iter.close()  # ends Grain's worker processes, if any
    progress.close()
    ckpt.wait()
    writer.close()

  # --- Summary ---------------------------------------------------------------------------------------
  if final_eval is None:  # nothing left to train: the workdir already holds the finished run
    final_eval = evaluate_now(state)
  ckpt.wait()
  summary = {"step": int(jax.device_get(state.step)), "total_steps": total_steps,
             "wall_seconds": time.perf_counter() - wall_start, "workdir": workdir,
             "checkpoints": ckpt.directory, "latest_step": ckpt.latest_step(), "best_step": ckpt.best_step(),
             # How the run was computed, for reports and tests: the feed and the compute dtype.
             "feed": "device" if exp.on_device else "host", "dtype": np.dtype(exp.dtype).name,
             "num_classes": dataset.num_classes, "image_shape": list(dataset.image_shape),
             "train_examples": len(train_source), **final_eval}
  ckpt.close()
  if is_chief:
    _write_json_atomically(os.path.join(workdir, SUMMARY_FILE), summary)
    print(format_summary(config, dataset.name, summary, resumed_from=start_step), flush=True)
  return summary


def _evaluate(eval_step, state, eval_source, config, image_shape, batch_sharding, ema: bool) -> dict[str, Any]:
  """The whole eval split, as `evaluator.evaluate` computes it for eval.py (same batches, same figures); with EMA,
  the averaged weights too, as eval/ema_accuracy, eval/ema_top5_accuracy and eval/ema_loss."""
  run = lambda s: evaluate(eval_step, s, eval_source, image_shape=image_shape,
                           global_batch_size=config.eval_batch_size, batch_sharding=batch_sharding,
                           resize_to=config.dataset.eval_resize, num_workers=config.dataset.num_workers)
  result = run(state)
  if ema:
    result.update({k.replace("eval/", "eval/ema_"): v for k, v in run(steps.ema_view(state)).items()
                   if k != "eval/num_examples"})
  return result


def _start_from_pretrained(state, path: str, exp, state_sharding, verbose: bool):
  """Fine-tuning: pretrained arrays where path and shape match, fresh ones elsewhere, optimizer state anew."""
  pretrained = checkpoint.load_variables(path)
  params, fresh = checkpoint.merge_pretrained(jax.device_get(state.params), pretrained["params"])
  batch_stats, _ = checkpoint.merge_pretrained(jax.device_get(state.batch_stats), pretrained["batch_stats"])
  if verbose:
    print(f"init_from {path}: {len(fresh)} parameter arrays kept their fresh initialisation"
          + (f" ({', '.join(fresh[:6])}{', ...' if len(fresh) > 6 else ''})" if fresh else ""), flush=True)
  state = state.replace(params=params, batch_stats=batch_stats,
                        opt_state=exp.step_config.tx.init(params))
  if isinstance(state, steps.EmaTrainState):  # the average starts from the pretrained weights too
    state = state.replace(ema={"params": params, "batch_stats": batch_stats})
  return jax.device_put(state, state_sharding)


def format_summary(config, dataset_name: str, s: dict[str, Any], resumed_from: int = 0) -> str:
  resumed = f" (resumed at step {resumed_from})" if resumed_from else ""
  return "\n".join([
      f"Finished {config.model.name} on {dataset_name}: step {s['step']}/{s['total_steps']}{resumed}, "
      f"{s['wall_seconds']:.1f} s wall ({s['dtype']} compute, {s['feed']} feed)",
      f"  {config.dataset.eval_split} accuracy {100 * s['eval/accuracy']:.2f}% "
      f"(top-5 {100 * s['eval/top5_accuracy']:.2f}%, loss {s['eval/loss']:.4f}) "
      f"on {s['eval/num_examples']} examples",
      f"  checkpoints: {s['checkpoints']} (latest step {s['latest_step']}, best step {s['best_step']})",
      f"  metrics:     {os.path.join(s['workdir'], metrics.METRICS_FILE)}",
      f"  TensorBoard: tensorboard --logdir {s['workdir']}",
      f"  evaluate:    python eval.py --workdir {s['workdir']}",
  ])
