"""A trained workdir, restored for inference: its config, what the config builds, and one checkpoint's state.

eval.py, predict.py and export.py all start here, so they agree on which checkpoint `--step`, `--best` and `--ema`
mean and on the errors a user gets when the workdir cannot serve.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax

from cnn_flax import checkpoint, experiment, parallel, steps
from cnn_flax import config as config_lib
from cnn_flax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Restored:
  config: Any  # the run's config (config.json on today's defaults)
  exp: experiment.Experiment  # dataset, model, step config as the run built them
  state: steps.TrainState  # the checkpoint's state; with `ema`, the averaged weights in place of the trained ones
  step: int
  devices: parallel.Devices


def read_config(workdir: str):
  """The run's saved config; a UserError when the directory holds no training run."""
  config_path = os.path.join(workdir, checkpoint.CONFIG_FILE)
  if not os.path.exists(config_path):
    raise UserError(f"--workdir {workdir!r} holds no training run ({config_path} is missing); "
                    f"pass the workdir that train.py wrote")
  with open(config_path) as f:
    return config_lib.from_saved(json.load(f))


def choose_step(ckpt: checkpoint.Checkpoints, step: int | None, best: bool) -> int:
  """The latest checkpoint, or `step`, or with `best` the highest eval accuracy; a UserError if there is none."""
  available = ckpt.steps()
  if not available:
    raise UserError(f"{ckpt.directory} holds no checkpoint yet; train first")
  if best:
    step = ckpt.best_step()
    if step is None:
      raise UserError(f"no checkpoint in {ckpt.directory} has an eval accuracy to rank by; use --step or the latest")
  elif step is None:
    step = ckpt.latest_step()
  if step not in available:
    raise UserError(f"no checkpoint for step {step} in {ckpt.directory}; available steps: {available}")
  return step


def restore(workdir: str, step: int | None = None, best: bool = False, ema: bool = False) -> Restored:
  """Restores one checkpoint of `workdir` onto this machine's devices (replicated).

  Args:
    workdir: a training run's workdir.
    step: the checkpoint step (default: the latest); exclusive with `best`.
    best: the checkpoint with the highest eval accuracy.
    ema: use the exponential moving average of the weights (runs trained with `ema_decay` > 0).
  Raises:
    UserError: no run, no checkpoint, an unknown step, or `ema` for a run trained without it.
  """
  config = read_config(workdir)
  if ema and not config.ema_decay:
    raise UserError(f"the run in {workdir!r} was trained without weight averaging (ema_decay=0); drop --ema")
  devices = parallel.start(config.eval_batch_size)
  exp = experiment.build(config)
  ckpt_dir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
  if not os.path.isdir(ckpt_dir):
    raise UserError(f"--workdir {workdir!r} has no checkpoints yet; train first")
  ckpt = checkpoint.Checkpoints(ckpt_dir, read_only=True)
  try:
    step = choose_step(ckpt, step, best)
    shardings = jax.tree.map(lambda _: devices.replicated, exp.abstract_state)
    state = ckpt.restore(step, checkpoint.abstract_with_shardings(exp.abstract_state, shardings))
  finally:
    ckpt.close()
  return Restored(config=config, exp=exp, state=steps.ema_view(state) if ema else state, step=int(step),
                  devices=devices)


def variables(restored: Restored) -> dict[str, Any]:
  """The model's variables ({"params", "batch_stats"} where it has BatchNorm), for `model.apply`."""
  state = restored.state
  return {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
