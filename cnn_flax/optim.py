"""The optax optimizer and learning-rate schedule a config describes."""
from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int,
                           steps_per_epoch: int) -> optax.Schedule:
  """Linear warmup to the peak rate, then constant, step decay at fractions of training, or cosine."""
  sched, peak = config.schedule, config.optimizer.learning_rate
  warmup = min(int(round(sched.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
  after = max(total_steps - warmup, 1)
  if sched.name == "constant":
    main = optax.constant_schedule(peak)
  elif sched.name == "step":
    boundaries = {int(round(f * total_steps)) - warmup: sched.decay_factor for f in sched.decay_at}
    main = optax.piecewise_constant_schedule(peak, {b: s for b, s in boundaries.items() if b > 0})
  elif sched.name == "cosine":
    main = optax.cosine_decay_schedule(peak, decay_steps=after, alpha=sched.end_factor)
  else:
    raise ValueError(f"unknown schedule {sched.name!r}")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def _kernels_only(params):
  """Weight decay applies to conv/dense kernels, not to biases or BatchNorm scales (ndim <= 1)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """The configured optimizer; parameters under a top-level name in `config.freeze` get zero updates."""
  tx = _base_optimizer(config, schedule)
  frozen = tuple(config.freeze)
  if not frozen:
    return tx
  labels = lambda params: {name: jax.tree.map(lambda _, label="frozen" if name in frozen else "trained": label,
                                             subtree)
                           for name, subtree in params.items()}
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


def _base_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  opt = config.optimizer
  if opt.name == "sgd":
    # Coupled L2 (added to the gradient before momentum), as in the papers' SGD recipes.
    return optax.chain(
        optax.add_decayed_weights(opt.weight_decay, mask=_kernels_only),
        optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
  if opt.name == "adamw":
    return optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                       mask=_kernels_only)
  if opt.name == "rmsprop":
    return optax.chain(
        optax.add_decayed_weights(opt.weight_decay, mask=_kernels_only),
        optax.rmsprop(schedule, decay=opt.decay, eps=opt.eps, momentum=opt.momentum or None))
  raise ValueError(f"unknown optimizer {opt.name!r}")
