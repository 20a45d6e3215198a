"""The training loop's bookkeeping: when to log, evaluate, save and check for a stop, and the metrics that wait on
the device between log steps.

`actions_at(step, ...)` is the whole schedule, in the manner of big_vision's `itstime`: the loop asks it once per
step instead of combining flags itself.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from cnn_flax import metrics
from cnn_flax.errors import TrainingDiverged


def itstime(step: int, every: int, total: int, *, last: bool = True) -> bool:
  """Whether an action repeated every `every` steps is due once `step` of `total` steps are done.

  `every <= 0` means never, except at the last step, which always counts when `last` is True.
  """
  return (last and step == total) or (every > 0 and step % every == 0)


@dataclasses.dataclass(frozen=True)
class Actions:
  """What the loop does after an optimizer step."""
  log: bool  # fetch the pending train metrics, check them, write their means
  evaluate: bool
  save: bool
  check_stop: bool  # ask whether a stop (SIGTERM) was requested


def actions_at(step: int, total: int, *, log_every: int, eval_every: int, checkpoint_every: int,
               process_count: int) -> Actions:
  """The schedule of periodic actions after `step` (completed optimizer steps) of `total`."""
  evaluate = itstime(step, eval_every, total)
  save = itstime(step, checkpoint_every, total)
  # Train metrics are flushed before every evaluation and save, so no saved step is ahead of the log.
  log = itstime(step, log_every, total) or evaluate or save
  # The last step ends the run anyway. With several processes the stop check is a collective: every process must
  # make it at the same steps or the job hangs, so it happens only at log steps, which all processes compute
  # alike from the same config. A single process checks its own flag after every step.
  check_stop = step != total and (log or process_count == 1)
  return Actions(log=log, evaluate=evaluate, save=save, check_stop=check_stop)


class TrainLog:
  """Per-step train metrics kept on the device until a log step, then checked and written as means.

  Also remembers the last checkpoint saved, which a divergence message names.
  """

  def __init__(self, writer: metrics.MetricsWriter, progress: metrics.Progress, schedule, checkpoint_dir: str,
               last_saved: int | None):
    self.writer, self.progress, self.schedule = writer, progress, schedule
    self.checkpoint_dir = checkpoint_dir
    self.last_saved = last_saved
    self.pending: list[tuple[int, dict[str, jax.Array]]] = []
    self.stopwatch = metrics.Stopwatch()

  def add(self, step: int, step_metrics: dict[str, jax.Array], images: int, first: bool) -> None:
    """Queues a step's metrics (no host sync); throughput is timed from after the first, compiling, step."""
    self.pending.append((step, step_metrics))
    if first:
      jax.block_until_ready(step_metrics)
      self.stopwatch.start()
    else:
      self.stopwatch.count(images)
    self.progress.advance()

  def _last_good(self) -> str:
    return f"step {self.last_saved}" if self.last_saved is not None else "none"

  def flush(self, step: int) -> None:
    """Fetches the metrics of the steps since the last flush (one host sync), checks them, logs their means."""
    if not self.pending:
      return
    host = jax.device_get([m for _, m in self.pending])
    for (s, _), m in zip(self.pending, host, strict=True):
      # Every figure, not only the loss: a gradient can overflow while the loss of its step is still finite.
      for key in ("loss", *sorted(k for k in m if k != "loss")):
        if not math.isfinite(float(m[key])):
          raise TrainingDiverged(
              f"the training {key.replace('_', ' ')} became non-finite ({float(m[key])}) at step {s}; the last good "
              f"checkpoint is {self._last_good()} in {self.checkpoint_dir}; lower config.optimizer.learning_rate or "
              f"add warmup")
    row = {f"train/{k}": float(np.mean([m[k] for m in host])) for k in host[0]}
    row["train/learning_rate"] = float(self.schedule(step - 1))
    rate = self.stopwatch.rate()
    if rate is not None:
      row["train/images_per_sec"] = rate
    self.writer.write(step, row)
    self.progress.show(loss=row["train/loss"], **({"img/s": f"{rate:.0f}"} if rate else {}))
    self.pending.clear()

  def evaluated(self, step: int, result: dict) -> None:
    self.writer.write(step, result)
    self.progress.show(acc=f"{result['eval/accuracy']:.4f}")
    self.stopwatch.start()  # evaluation time is not training throughput

  def diverged_parameters(self, step: int) -> TrainingDiverged:
    return TrainingDiverged(f"the parameters became non-finite by step {step}; the last good checkpoint is "
                            f"{self._last_good()} in {self.checkpoint_dir}; lower config.optimizer.learning_rate")
