"""Config checks that run before any work starts, and the rules for resuming a run in an existing workdir."""
from __future__ import annotations

import math
import sys
from typing import Any

import ml_collections

from cnn_flax.errors import UserError

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
DTYPES = ("auto", "float32", "bfloat16")

# Fields that define *which* run a workdir holds. Resuming with any of them changed would continue a
# different experiment from someone else's weights, data order or optimizer state, so it is refused.
# Every other field (duration, learning rate and schedule, weight decay, intervals, eval split, data_dir,
# workers, dtype, ...) may change between a stop and a resume; the schedule is then recomputed for the
# new length from the restored step on.
RUN_IDENTITY_FIELDS = (
    "model", "dataset.name", "dataset.train_split", "dataset.image_size",
    "batch_size", "seed", "optimizer.name", "optimizer.momentum",
)

# Free-form sub-dicts whose keys are not checked against the base config.
_FREE_FORM = ("model.kwargs",)


def base_config() -> ml_collections.ConfigDict:
  from cnn_flax.cli import REPO_ROOT  # configs/ lives beside the package
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  from configs import base
  return base.get_base_config()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in d.items():
    path = f"{prefix}{key}"
    if isinstance(value, (dict, ml_collections.ConfigDict)) and path not in _FREE_FORM:
      out.update(_flatten(value, path + "."))
    else:
      out[path] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
  return out


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the first field whose value cannot work, and how to fix it."""
  from cnn_flax import models  # late: models import flax, and a bad config should fail fast
  from cnn_flax.data import datasets

  known = _flatten(base_config())
  for key in _flatten(config):
    if key not in known and not any(key.startswith(f + ".") or key == f for f in _FREE_FORM):
      raise UserError(f"config field {key!r} is not a cnn_flax setting; see configs/base.py for the fields")

  def check(ok: bool, field: str, why: str) -> None:
    if not ok:
      value = _flatten(config).get(field)
      raise UserError(f"config.{field}={value!r}: {why}")

  check(config.model.name in models.names(), "model.name",
        f"unknown model; choose one of: {', '.join(models.names())}")
  check(datasets.is_known(config.dataset.name), "dataset.name", f"unknown dataset; choose one of: {datasets.choices()}")
  check(config.dataset.image_size >= 0, "dataset.image_size", "must be >= 0 (0 = the model's input size)")
  check(config.dataset.num_workers >= 0, "dataset.num_workers", "must be >= 0")
  check(config.augment.crop_padding >= 0, "augment.crop_padding", "must be >= 0 (0 = no random crop)")
  from cnn_flax.data.pipeline import HOST_POLICIES
  check(config.augment.host in HOST_POLICIES, "augment.host", f"choose one of: {', '.join(HOST_POLICIES)}")
  check(0 < config.augment.area[0] <= config.augment.area[1] <= 1, "augment.area",
        "must be (min, max) fractions with 0 < min <= max <= 1")
  check(0 < config.augment.aspect[0] <= config.augment.aspect[1], "augment.aspect", "must be (min, max) > 0")
  check(0 < config.augment.scale[0] <= config.augment.scale[1], "augment.scale", "must be (min, max) > 0")
  check(config.augment.pca_lighting >= 0, "augment.pca_lighting", "must be >= 0")
  check(config.augment.mixup_alpha >= 0, "augment.mixup_alpha", "must be >= 0 (0 = off)")
  check(config.augment.cutmix_alpha >= 0, "augment.cutmix_alpha", "must be >= 0 (0 = off)")
  check(config.dataset.on_device in ("auto", "yes", "no"), "dataset.on_device", "choose one of: auto, yes, no")
  check(config.dataset.eval_resize >= 0, "dataset.eval_resize", "must be >= 0")
  check(config.batch_size > 0, "batch_size", "must be a positive global batch size")
  check(config.eval_batch_size > 0, "eval_batch_size", "must be a positive global batch size")
  check(config.num_train_steps >= 0, "num_train_steps",
        "must be >= 0 (0 = train for num_epochs, > 0 = train for this many steps)")
  check(config.num_train_steps > 0 or (config.num_epochs > 0 and math.isfinite(config.num_epochs)), "num_epochs",
        "must be > 0 when num_train_steps is 0")
  opt = config.optimizer
  check(opt.name in OPTIMIZERS, "optimizer.name", f"unknown optimizer; choose one of: {', '.join(OPTIMIZERS)}")
  check(opt.learning_rate > 0 and math.isfinite(opt.learning_rate), "optimizer.learning_rate", "must be > 0")
  check(0 <= opt.momentum < 1, "optimizer.momentum", "must be in [0, 1)")
  check(opt.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
  check(opt.eps > 0, "optimizer.eps", "must be > 0")
  sched = config.schedule
  check(sched.name in SCHEDULES, "schedule.name", f"unknown schedule; choose one of: {', '.join(SCHEDULES)}")
  check(sched.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0")
  check(all(0 < b < 1 for b in sched.decay_at) and list(sched.decay_at) == sorted(sched.decay_at),
        "schedule.decay_at", "must be increasing fractions of training strictly between 0 and 1")
  check(0 < sched.decay_factor <= 1, "schedule.decay_factor", "must be in (0, 1]")
  check(0 <= sched.end_factor <= 1, "schedule.end_factor", "must be in [0, 1]")
  check(0 <= config.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
  check(config.aux_loss_weight >= 0, "aux_loss_weight", "must be >= 0 (0 disables auxiliary losses)")
  check(config.dtype in DTYPES, "dtype", f"choose one of: {', '.join(DTYPES)}")
  check(config.log_every_steps > 0, "log_every_steps", "must be > 0")
  check(config.eval_every_steps >= 0, "eval_every_steps", "must be >= 0 (0 = only at the end)")
  check(config.checkpoint_every_steps >= 0, "checkpoint_every_steps", "must be >= 0 (0 = only at the end)")
  check(config.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
  check(all(isinstance(name, str) and name for name in config.freeze), "freeze",
        "must be a tuple of top-level parameter names, e.g. ('stem', 'layer1')")


def identity_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """The run-identity fields on which a workdir's saved config and a new config disagree."""
  old, new = _flatten(saved), _flatten(config.to_dict())
  diffs = []
  for field in RUN_IDENTITY_FIELDS:
    keys = sorted(k for k in set(old) | set(new) if k == field or k.startswith(field + "."))
    for key in keys:
      if _normalise(old.get(key)) != _normalise(new.get(key)):
        diffs.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
  return diffs


def _normalise(value):
  return list(value) if isinstance(value, tuple) else value


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A run's saved config (config.json) on top of today's defaults, so fields added since still exist."""
  config = base_config()
  config.update(saved)
  return config
