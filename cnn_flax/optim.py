"""The optax optimizer and learning-rate schedule a config describes.

`OPTIMIZERS` and `SCHEDULES` are the registries: a new optimizer or schedule is one function here, registered by
name; config validation offers exactly these names.
"""
from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import optax


# --- schedules: (schedule config, peak rate, steps after warmup, warmup steps, total steps) -> optax schedule --
def _constant(sched, peak: float, after: int, warmup: int, total: int) -> optax.Schedule:
  del sched, after, warmup, total
  return optax.constant_schedule(peak)


def _step(sched, peak: float, after: int, warmup: int, total: int) -> optax.Schedule:
  """Multiplies the rate by `decay_factor` at each fraction `decay_at` of the whole training length."""
  del after
  boundaries = {int(round(f * total)) - warmup: sched.decay_factor for f in sched.decay_at}
  return optax.piecewise_constant_schedule(peak, {b: s for b, s in boundaries.items() if b > 0})


def _cosine(sched, peak: float, after: int, warmup: int, total: int) -> optax.Schedule:
  del warmup, total
  return optax.cosine_decay_schedule(peak, decay_steps=after, alpha=sched.end_factor)


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {"constant": _constant, "step": _step, "cosine": _cosine}


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int,
                           steps_per_epoch: int) -> optax.Schedule:
  """Linear warmup to the peak rate over `schedule.warmup_epochs`, then the registered schedule `schedule.name`.

  Args:
    config: the run's config (reads `schedule.*` and `optimizer.learning_rate`).
    total_steps: the training length in optimizer steps.
    steps_per_epoch: optimizer steps per epoch (converts warmup epochs to steps).
  Returns:
    An optax schedule: step -> learning rate.
  """
  sched, peak = config.schedule, config.optimizer.learning_rate
  warmup = min(int(round(sched.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
  after = max(total_steps - warmup, 1)
  main = SCHEDULES[sched.name](sched, peak, after, warmup, total_steps)
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


# --- optimizers: (optimizer config, schedule) -> optax transformation ------------------------------------------
def _kernels_only(params):
  """Weight decay applies to conv/dense kernels, not to biases or BatchNorm scales (ndim <= 1)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _sgd(opt, schedule) -> optax.GradientTransformation:
  # Coupled L2 (added to the gradient before momentum), as in the papers' SGD recipes.
  return optax.chain(
      optax.add_decayed_weights(opt.weight_decay, mask=_kernels_only),
      optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))


def _adamw(opt, schedule) -> optax.GradientTransformation:
  return optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                     mask=_kernels_only)


def _rmsprop(opt, schedule) -> optax.GradientTransformation:
  return optax.chain(
      optax.add_decayed_weights(opt.weight_decay, mask=_kernels_only),
      optax.rmsprop(schedule, decay=opt.decay, eps=opt.eps, momentum=opt.momentum or None))


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": _sgd, "adamw": _adamw, "rmsprop": _rmsprop}


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """The registered optimizer `optimizer.name`, after clipping to `optimizer.grad_clip_norm` when set; parameters
  under a top-level name in `config.freeze` get zero updates (and do not count in the clipped norm).

  Args:
    config: the run's config (reads `optimizer.*` and `freeze`).
    schedule: the learning-rate schedule (see `learning_rate_schedule`).
  Returns:
    An optax GradientTransformation.
  """
  tx = OPTIMIZERS[config.optimizer.name](config.optimizer, schedule)
  if config.optimizer.grad_clip_norm:  # on the raw gradients, before weight decay and momentum see them
    tx = optax.chain(optax.clip_by_global_norm(config.optimizer.grad_clip_norm), tx)
  frozen = tuple(config.freeze)
  if not frozen:
    return tx
  labels = lambda params: {name: jax.tree.map(lambda _, label="frozen" if name in frozen else "trained": label,
                                             subtree)
                           for name, subtree in params.items()}
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
