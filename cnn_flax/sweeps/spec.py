"""What a sweep is: a base config, a list of override dicts (points), seeds, and the train.py command of each run.

Points come from `--set KEY=V1,V2` flags (their product) or from a sweep file whose `get_sweep()` returns the list
(built with `product` and `zipped`). Every point is checked against the base config before anything runs, with
the same rules as train.py: an unknown key, an empty value list, a malformed `--set` or a value train.py would
refuse is a `UserError`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
from typing import Any, Sequence

import ml_collections

from cnn_flax import cli
from cnn_flax import config as config_lib
from cnn_flax.errors import UserError

MODEL_KWARGS = "model.kwargs."


# --- building points -------------------------------------------------------------------------------------------
def product(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """Every combination of the axes' values: product(a=[1, 2], b=[3]) -> [{a: 1, b: 3}, {a: 2, b: 3}].

  Keys are config paths; write them with '__' for '.' (Python keywords cannot hold dots): `optimizer__learning_rate`.
  """
  keys = [k.replace("__", ".") for k in axes]
  return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


def zipped(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """The axes' values side by side: zipped(a=[1, 2], b=[3, 4]) -> [{a: 1, b: 3}, {a: 2, b: 4}] (equal lengths)."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) > 1:
    raise UserError(f"zipped() needs value lists of one length, got {dict((k, len(v)) for k, v in axes.items())}")
  keys = [k.replace("__", ".") for k in axes]
  return [dict(zip(keys, values, strict=True)) for values in zip(*axes.values(), strict=True)]


def _split_top_level(text: str) -> list[str]:
  """Splits on commas outside brackets and quotes, so that tuple values survive: '(1,2),(3,4)' -> 2 values."""
  parts, depth, quote, current = [], 0, "", ""
  for ch in text:
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      parts.append(current)
      current = ""
      continue
    current += ch
  parts.append(current)
  return [p.strip() for p in parts]


def parse_set(text: str) -> tuple[str, list[str]]:
  """`KEY=V1,V2,...` -> (KEY, [V1, V2, ...]) as texts; a malformed flag is a UserError."""
  key, sep, values = text.partition("=")
  key = key.strip().removeprefix("config.")
  if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
    raise UserError(f"--set {text!r}: write --set KEY=V1,V2,... with KEY a config field, e.g. "
                    f"--set optimizer.learning_rate=0.1,0.02")
  parts = _split_top_level(values)
  if not values.strip() or any(not p for p in parts):
    raise UserError(f"--set {text!r}: the value list of {key} is empty or has an empty entry")
  return key, parts


def _python_file(path: str, what: str):
  """The module in `path`, run; a one-line UserError when it is missing or raises (the file is the user's)."""
  if not os.path.isfile(path):
    raise UserError(f"{what} {path!r} not found")
  spec = importlib.util.spec_from_file_location(f"_cnn_flax_{what.replace(' ', '_')}_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except UserError:
    raise
  except Exception as e:  # noqa: BLE001
    raise UserError(f"{what} {path!r} failed to load: {type(e).__name__}: {e}") from None
  return module


def load_sweep_file(path: str) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
  """(points, default config, benchmark settings) of a sweep file: `get_sweep()`, and optionally `CONFIG` (the
  base recipe) and `BENCHMARK` (time every point's model too; see `sweeps.costs`)."""
  module = _python_file(path, "sweep file")
  if not hasattr(module, "get_sweep"):
    raise UserError(f"sweep file {path!r} has no get_sweep() returning the list of override dicts")
  points = module.get_sweep()
  if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
    raise UserError(f"{path}: get_sweep() must return a non-empty list of dicts of config overrides")
  return points, getattr(module, "CONFIG", ""), dict(getattr(module, "BENCHMARK", {}))


# --- the config a point describes ----------------------------------------------------------------------------
def load_config(config_arg: str) -> ml_collections.ConfigDict:
  """The config of `--config FILE[:PRESET]`, loaded as train.py loads it."""
  file, _, preset = config_arg.partition(":")
  module = _python_file(file, "config file")
  try:
    return module.get_config(preset) if preset else module.get_config()
  except Exception as e:  # noqa: BLE001
    raise UserError(f"could not load the config {config_arg!r}: {type(e).__name__}: {e}") from None


def _field_of(config: ml_collections.ConfigDict, key: str) -> tuple[Any, str]:
  node = config
  *parents, leaf = key.split(".")
  for p in parents:
    if not isinstance(node, ml_collections.ConfigDict) or p not in node:
      raise UserError(f"unknown config key {key!r} in the sweep; see `python -m cnn_flax.schema` for the fields")
    node = node[p]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise UserError(f"unknown config key {key!r} in the sweep; see `python -m cnn_flax.schema` for the fields")
  return node, leaf


def value_from_text(config: ml_collections.ConfigDict, key: str, text: str) -> Any:
  """A `--set` value as train.py would read `--config.KEY=text`: by the field's type (strings stay text)."""
  if key.startswith(MODEL_KWARGS):
    return cli.parse_literal(text)
  node, leaf = _field_of(config, key)
  if isinstance(node[leaf], str):
    return text
  value = cli.parse_literal(text)
  if isinstance(value, str):
    raise UserError(f"--set {key}: {text!r} is not a value of type {type(node[leaf]).__name__}")
  return value


def text_of(value: Any) -> str:
  """How a value is written on train.py's command line (`--config.KEY=text`)."""
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value) if isinstance(value, str) else repr(value)


def apply(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with `overrides` set (unknown keys are a UserError; model.kwargs.* may add keys)."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    value = tuple(value) if isinstance(value, list) else value
    if key.startswith(MODEL_KWARGS):
      with config.model.kwargs.unlocked():
        config.model.kwargs[key[len(MODEL_KWARGS):]] = value
      continue
    node, leaf = _field_of(config, key)
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise UserError(f"sweep value {key}={value!r} does not fit the field ({e})") from None
  return config


# --- runs -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the sweep: a point, possibly with a seed."""
  name: str  # the run directory's name, readable from the overrides
  point: str  # the name without the seed: runs of one point differ only by seed
  overrides: dict[str, Any]  # seed included when the sweep sets it

  def command(self, config_arg: str, workdir: str, train_script: str = "train.py") -> list[str]:
    """The complete train.py command of this run (what --dry_run prints and the launchers execute)."""
    flags = [f"--config.{k}={text_of(v)}" for k, v in self.overrides.items()]
    return ["python", train_script, "--config", config_arg, "--workdir", os.path.join(workdir, self.name), *flags,
            "--config.progress_bar=False"]

  def shell(self, config_arg: str, workdir: str, train_script: str = "train.py") -> str:
    return shlex.join(self.command(config_arg, workdir, train_script))


def _short(value: Any) -> str:
  text = text_of(value) if not isinstance(value, str) else value
  return re.sub(r"[^\w.+-]+", "-", text.replace(" ", "")).strip("-") or "none"


def _label(key: str) -> str:
  """How a key appears in a run's name: its last part (`model.name` -> `model`, `model.kwargs.plain` -> `plain`)."""
  parts = key.split(".")
  return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def _name(overrides: dict[str, Any], keys: list[str]) -> str:
  """`learning_rate=0.1,batch_size=64` from the `keys` that vary; a key's full path where two labels clash."""
  labels = [_label(k) for k in keys]
  parts = [f"{label if labels.count(label) == 1 else k}={_short(overrides[k])}"
           for k, label in zip(keys, labels, strict=True) if k in overrides]
  name = ",".join(parts) or "base"
  if len(name) > 120:  # keep directory names usable; the hash keeps them distinct
    name = name[:100] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
  return name


def varying(points: list[dict[str, Any]]) -> list[str]:
  """Keys whose value differs between points (or that some points lack), in first-seen order."""
  keys = list(dict.fromkeys(k for p in points for k in p))
  missing = object()
  return [k for k in keys if len({json.dumps(p.get(k, missing), default=str) for p in points}) > 1]


def expand(points: list[dict[str, Any]], seeds: int) -> list[Run]:
  """The runs: each point once (seeds = 0) or with seed 0..seeds-1.

  A run's name shows the values that vary between points (constants are in its command and config, not its name),
  then its seed.
  """
  varying_keys = varying(points)  # once: it compares every point, so calling it per point made a sweep quadratic
  keys = [k for k in varying_keys if k != "seed"]
  runs, seen = [], set()
  for point in points:
    point_name = _name(point, keys)
    for seed in (range(seeds) if seeds else [None]):
      overrides = dict(point) if seed is None else {**point, "seed": seed}
      name = _name(overrides, keys + (["seed"] if "seed" in overrides and (seeds or "seed" in varying_keys)
                                      else []))
      if name in seen:
        raise UserError(f"the sweep holds the point {overrides} twice; remove the duplicate")
      seen.add(name)
      runs.append(Run(name=name, point=point_name, overrides=overrides))
  return runs


def check(config_arg: str, runs: list[Run]) -> dict[str, dict]:
  """Builds and validates every run's config before anything runs; returns {run name: config dict}."""
  from cnn_flax import models
  base = load_config(config_arg)
  configs = {}
  for run in runs:
    config = apply(base, run.overrides)
    config.progress_bar = False  # as the run's command sets it
    config_lib.validate(config)
    models.create(config.model.name, num_classes=10, **config.model.kwargs.to_dict())  # refuses unknown fields
    configs[run.name] = json.loads(json.dumps(config.to_dict()))  # as config.json will hold it
  return configs
