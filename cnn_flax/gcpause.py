"""Python's cyclic garbage collector paused while JAX traces, lowers and compiles.

Tracing a model allocates hundreds of thousands of Python objects (tracers, jaxpr equations, MLIR handles).
CPython collects its youngest objects every 700 net allocations and, less often, the older generations, whose
walks grow with everything the trace already holds: `perf record` of a warm DenseNet-121 start put 11% of its
samples in the collector (`gc_collect_main`, `visit_decref`, `visit_reachable`). With it paused, warm starts
(224 px, batch 16: the initial state, then the step traced and loaded from the persistent cache) took 2.02-2.40 s
against 2.52-2.58 for ResNet-50 and 1.28-1.30 against 1.57-1.59 for MobileNet v1 (benchmarks/README.md).

The pause covers only those phases (`steps.state_shapes`, `steps.initialise`, the first
call of each jitted step, the benchmark's compile), not training: reference counting still frees almost
everything at once, and what cycles a trace leaves are collected as soon as the collector runs again. A collector
already disabled by the caller stays disabled.
"""
from __future__ import annotations

import contextlib
import gc
from typing import Any, Callable


@contextlib.contextmanager
def paused():
  """Runs the block with the cyclic garbage collector disabled, then restores its previous state."""
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if was_enabled:
      gc.enable()


class FirstCallPaused:
  """`fn` with its first call (where `jax.jit` traces and compiles) run under `paused()`.

  Other attributes (`lower`, `trace`, ...) are `fn`'s own, so ahead-of-time use is unchanged.
  """

  def __init__(self, fn: Callable):
    self._fn = fn
    self._called = False

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    if self._called:
      return self._fn(*args, **kwargs)
    with paused():
      out = self._fn(*args, **kwargs)
    self._called = True
    return out

  def __getattr__(self, name: str) -> Any:
    return getattr(self._fn, name)
