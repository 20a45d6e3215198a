"""Devices: multi-host start-up, the data-parallel mesh, shardings, and host-local -> global batches.

One code path serves 1 CPU, 8 GPUs and a TPU pod: the global batch is split along the mesh axis "data"
over every device of every process; parameters and optimizer state are replicated. Under `jax.jit` with
these shardings XLA inserts the gradient all-reduce, and BatchNorm statistics span the global batch.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnn_flax.errors import UserError

DATA_AXIS = "data"


def initialize_distributed() -> None:
  """Starts multi-process JAX when the environment describes several processes; no-op otherwise.

  Explicit: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (e.g. two processes on one machine).
  Cluster launchers that `jax.distributed.initialize()` detects by itself: SLURM with more than one task,
  and Cloud TPU pods with more than one worker.
  """
  if jax.distributed.is_initialized():
    return
  coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if coordinator:
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    jax.distributed.initialize()


@dataclasses.dataclass(frozen=True)
class Devices:
  """The mesh and the two shardings every step uses."""
  mesh: Mesh
  replicated: NamedSharding  # parameters, optimizer state, scalars
  batch_sharded: NamedSharding  # the global batch, split along DATA_AXIS


def start(eval_batch_size: int, batch_size: int | None = None) -> Devices:
  """Multi-host start-up, compilation cache and mesh; checks that the batches split over the devices.

  `batch_size` (training) is checked only when given: evaluation may run on other devices than training.
  """
  initialize_distributed()
  configure_compilation_cache()
  mesh = make_mesh()
  if batch_size is not None:
    local_batch_size(batch_size)
  local_batch_size(eval_batch_size, "eval_batch_size")
  return Devices(mesh, replicated(mesh), batch_sharded(mesh))


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices of all processes, with the Auto axis type (sharding left to XLA)."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_size(global_batch_size: int, field: str = "batch_size") -> int:
  """The per-process share of a global batch, after checking that it splits evenly over the devices."""
  devices = jax.device_count()
  if global_batch_size % devices:
    raise UserError(f"config.{field}={global_batch_size} does not split evenly over {devices} devices; "
                    f"use a multiple of {devices}")
  return global_batch_size // jax.process_count()


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each process's host-local batch into one global array sharded along the batch axis."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def to_host(tree: Any) -> Any:
  """Fetches (possibly multi-process) arrays to numpy on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def configure_compilation_cache() -> None:
  """Turns on JAX's persistent compilation cache so a rerun skips XLA compilation.

  The location is $JAX_COMPILATION_CACHE_DIR when set, else ~/.cache/cnn_flax/jax. Small programs are
  cached too (the default threshold of 1 s would skip most of ours on a CPU).
  """
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/cnn_flax/jax"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class StopSignal:
  """Turns SIGTERM (preemption, `scancel`, `kill`) into a request to checkpoint and stop at a step boundary.

  With several processes the request is shared: every process stops at the same step once any one of them
  got the signal. That check is a collective, so the trainer asks only where it syncs with the host anyway.
  """

  def __init__(self):
    import signal
    import threading
    self._flag = threading.Event()
    self._previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())

  def requested(self) -> bool:
    if jax.process_count() == 1:
      return self._flag.is_set()
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.array([self._flag.is_set()]))
    return bool(np.any(flags))

  def restore(self) -> None:
    if self._previous is not None:
      import signal
      signal.signal(signal.SIGTERM, self._previous)
