"""Orbax checkpoints of a run: training state, data-iterator state and config, saved together per step.

Retention: the latest `keep` checkpoints are kept, plus the one with the highest `eval/accuracy`. Only
checkpoints saved right after an evaluation carry metrics; a checkpoint without an eval is never a
candidate for "best" and is kept only while it is among the latest `keep`. The trainer always evaluates
the final step, so the final checkpoint always competes for best.
"""
from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from cnn_flax.errors import UserError

BEST_METRIC = "eval/accuracy"
# Layout of a training workdir, shared by the trainer, the evaluator and fine-tuning.
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


def _score(metrics: dict) -> float:
  # A checkpoint saved without an eval carries {} and ranks below every evaluated one.
  return metrics.get(BEST_METRIC, float("-inf"))


def _composite(**items):
  return ocp.args.Composite(**{k: v for k, v in items.items() if v is not None})


class Checkpoints:
  """A thin layer over `ocp.CheckpointManager` with cnn_flax's items and retention rules."""

  def __init__(self, directory: str, keep: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=_score, reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False),
    ])
    # best_fn only makes Orbax write each step's metrics to disk (so "best" survives a restart);
    # retention itself is decided by the preservation policy.
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=_score,
                                           create=not read_only,
                                           read_only=read_only, enable_async_checkpointing=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "config"))

  def steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the highest eval accuracy among checkpoints that have one."""
    scored = []
    for step in self.steps():
      metrics = self.manager.metrics(step)
      if metrics and BEST_METRIC in metrics:
        scored.append((metrics[BEST_METRIC], step))
    return max(scored)[1] if scored else None

  def save(self, step: int, state: Any, data_iterator: Any = None, config: dict | None = None,
           metrics: dict[str, float] | None = None) -> None:
    """Starts an asynchronous save; training continues while it is written."""
    args = _composite(state=ocp.args.StandardSave(state),
                      data=grain.checkpoint.CheckpointSave(data_iterator) if data_iterator is not None else None,
                      config=ocp.args.JsonSave(config) if config is not None else None)
    self.manager.save(step, args=args, metrics=metrics or {}, force=True)

  def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> Any:
    """Restores the state onto the shardings of `abstract_state`; rewinds `data_iterator` in place.

    The state restores onto any mesh (Orbax reshards it). The data position is read from this process's file when
    the checkpoint was written by as many processes, and otherwise from any process's file: cnn_flax's feeds save
    only the number of global batches consumed (`{"next_index": k}`, every process's slice of every batch), which
    is the same whatever the number of processes, so a run moves between topologies (4 devices to 1, 1 process
    to 2). A position saved by Grain worker processes has no such meaning and needs the same process count.
    """
    state = self.manager.restore(step, args=_composite(state=ocp.args.StandardRestore(abstract_state))).state
    if data_iterator is not None:
      data_iterator.set_state(_data_position(os.path.join(self.directory, str(step), "data")))
    return state

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _data_position(directory: str) -> dict:
  own = os.path.join(directory, f"process_{jax.process_index()}-of-{jax.process_count()}.json")
  if os.path.exists(own):
    with open(own) as f:
      return json.load(f)
  saved = []
  for name in sorted(os.listdir(directory)):
    if name.startswith("process_") and name.endswith(".json"):
      with open(os.path.join(directory, name)) as f:
        saved.append(json.load(f))
  if not saved:
    raise FileNotFoundError(f"no data-iterator position in {directory}")
  if any(set(position) != {"next_index"} for position in saved) or any(p != saved[0] for p in saved):
    raise UserError(f"the data position in {directory} was saved by {len(saved)} process(es) with Grain worker "
                    f"processes; resume with the same number of processes, or from a run without workers")
  return saved[0]


DAMAGED_SUFFIX = ".damaged"


def _set_aside(directory: str, step: int) -> str:
  """Renames a damaged step directory out of Orbax's sight (process 0; every process waits), never deleting it."""
  source = os.path.join(directory, str(step))
  target, n = source + DAMAGED_SUFFIX, 1
  while os.path.exists(target):  # an earlier damaged copy of the same step stays too
    target, n = f"{source}{DAMAGED_SUFFIX}.{n}", n + 1
  if jax.process_index() == 0:
    os.replace(source, target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"cnn_flax set aside {source}")
  return target


def restore_latest_good(directory: str, keep: int, abstract_state: Any, data_iterator: Any,
                        warn) -> tuple[Checkpoints, Any, int | None]:
  """(manager, state, step) of the newest checkpoint that restores; (manager, None, None) when there is none.

  A checkpoint that fails to restore (a truncated array file, a missing item, a half-written directory) is renamed
  to `<step>.damaged`, where Orbax no longer sees it but nothing is lost, `warn` gets one line saying so, and the
  one before it is tried.
  """
  ckpt = Checkpoints(directory, keep=keep)
  fresh = data_iterator.get_state() if data_iterator is not None else None  # a failed restore may move it
  for step in sorted(ckpt.steps(), reverse=True):
    try:
      return ckpt, ckpt.restore(step, abstract_state, data_iterator), step
    except UserError:
      raise  # not damage: a position that cannot move to this topology
    except Exception as e:  # noqa: BLE001  whatever the storage layer raises: the next older one may be whole
      reason = (str(e).strip().splitlines() or [""])[0][:160]
      ckpt.close()
      aside = _set_aside(ckpt.directory, step)
      warn(f"warning: checkpoint step {step} in {ckpt.directory} is damaged ({type(e).__name__}: {reason}); "
           f"moved it to {aside} and trying the one before it")
      ckpt = Checkpoints(directory, keep=keep)
  if fresh is not None:
    data_iterator.set_state(fresh)
  return ckpt, None, None


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, so Orbax restores straight onto the mesh."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


# --- Pretrained weights for fine-tuning ---------------------------------------------------------------

def save_variables(path: str, variables: dict[str, Any]) -> None:
  """Writes Flax variables (e.g. from cnn_flax.convert) as an .npz that `config.init_from` accepts."""
  import numpy as np
  from flax import traverse_util
  flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
  np.savez(path, **{key: np.asarray(value) for key, value in flat.items()})


def load_variables(path: str) -> dict[str, Any]:
  """{"params", "batch_stats"} as numpy from a training workdir (its latest checkpoint), one checkpoint step
  directory, or an .npz whose keys are '/'-joined paths such as 'params/stem/conv/kernel'."""
  import numpy as np

  if path.endswith(".npz"):
    if not os.path.exists(path):
      raise UserError(f"config.init_from={path!r} does not exist")
    tree: dict[str, Any] = {}
    with np.load(path) as f:
      for key in f.files:
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
          node = node.setdefault(p, {})
        node[leaf] = f[key]
    return {"params": tree.get("params", {}), "batch_stats": tree.get("batch_stats", {})}
  step_dir = path
  if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
    manager = Checkpoints(os.path.join(path, CHECKPOINT_DIR), read_only=True)
    latest = manager.latest_step()
    manager.close()
    if latest is None:
      raise UserError(f"config.init_from={path!r} holds no checkpoint yet")
    step_dir = os.path.join(path, CHECKPOINT_DIR, str(latest))
  if not os.path.isdir(os.path.join(step_dir, "state")):
    raise UserError(f"config.init_from={path!r} is neither a training workdir, a checkpoint step directory "
                    f"nor an .npz of variables")
  state = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(step_dir, "state")))
  return {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}


def merge_pretrained(fresh: Any, pretrained: Any) -> tuple[Any, list[str]]:
  """Takes each array from `pretrained` where its path and shape match `fresh`; keeps the fresh one elsewhere
  (e.g. a classifier head for another number of classes). Returns the merged tree and the kept-fresh paths."""
  import numpy as np
  from flax import traverse_util
  flat_fresh = traverse_util.flatten_dict(fresh, sep="/")
  flat_pre = traverse_util.flatten_dict(pretrained, sep="/") if pretrained else {}
  merged, fresh_paths = {}, []
  for key, value in flat_fresh.items():
    source = flat_pre.get(key)
    if source is not None and tuple(np.shape(source)) == tuple(value.shape):
      merged[key] = jax.numpy.asarray(source, value.dtype)
    else:
      merged[key] = value
      fresh_paths.append(key)
  return traverse_util.unflatten_dict(merged, sep="/"), fresh_paths
