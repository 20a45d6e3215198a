"""Config checks that run before any work starts, and the rules for resuming a run in an existing workdir.

The fields, their defaults and their checks live in `cnn_flax.schema`; this module applies them.
"""
from __future__ import annotations

import json
from typing import Any

import ml_collections

from cnn_flax import schema
from cnn_flax.errors import UserError

# Fields that define *which* run a workdir holds (marked in the schema). Resuming with any of them changed would
# continue a different experiment from someone else's weights, data order or optimizer state, so it is refused.
# Every other field (duration, learning rate and schedule, weight decay, intervals, eval split, data_dir,
# workers, dtype, ...) may change between a stop and a resume; the schedule is then recomputed for the new
# length from the restored step on.
RUN_IDENTITY_FIELDS = schema.RUN_IDENTITY_FIELDS


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the first field whose value cannot work, and how to fix it.

  Args:
    config: a config built from `cnn_flax.schema.base_config()` (every recipe in configs/ is).
  """
  found = schema.problems(config)
  if not found:
    return
  path, value, why = found[0]
  if path not in schema.BY_PATH:
    raise UserError(f"config field {path!r} {why}")
  raise UserError(f"config.{path}={value!r}: {why}")


def identity_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """The run-identity fields on which a workdir's saved config and a new config disagree, as 'field: old -> new'."""
  old, new = schema.flatten(saved), schema.flatten(config.to_dict())
  diffs = []
  for field in RUN_IDENTITY_FIELDS:
    keys = sorted(k for k in set(old) | set(new) if k == field or k.startswith(field + "."))
    for key in keys:
      if _comparable(old.get(key)) != _comparable(new.get(key)):
        diffs.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
  return diffs


def _comparable(value: Any) -> Any:
  """config.json stores tuples as lists: compare both sides as JSON would."""
  return json.loads(json.dumps(value))


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A run's saved config (config.json) on top of today's defaults, so fields added since still exist."""
  config = schema.base_config()
  config.update(saved)
  return config
