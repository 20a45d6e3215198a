"""The garbage collector is paused exactly while a run traces and compiles (cnn_flax/gcpause.py)."""
import gc

import jax
import jax.numpy as jnp
import pytest

from cnn_flax import gcpause, parallel, steps


@pytest.fixture(autouse=True)
def collector_on():
  was = gc.isenabled()
  gc.enable()
  yield
  (gc.enable if was else gc.disable)()


def test_paused_disables_then_restores_even_on_error():
  with gcpause.paused():
    assert not gc.isenabled()
  assert gc.isenabled()
  with pytest.raises(ValueError), gcpause.paused():
    raise ValueError("inside")
  assert gc.isenabled()


def test_paused_leaves_a_collector_the_caller_disabled_off():
  gc.disable()
  with gcpause.paused():
    pass
  assert not gc.isenabled()


def test_first_call_traces_with_the_collector_paused_and_later_calls_run_with_it():
  seen = []

  def f(x):
    seen.append(gc.isenabled())  # runs while jax.jit traces
    return x * 2

  jitted = jax.jit(f)
  wrapped = gcpause.FirstCallPaused(jitted)
  assert float(wrapped(jnp.float32(1.0))) == 2.0
  assert seen == [False] and gc.isenabled()
  wrapped(jnp.zeros((3,)))  # a new shape traces again, now with the collector on
  assert seen == [False, True]
  # Ahead-of-time use goes to the jitted function itself.
  assert float(wrapped.lower(jnp.float32(2.0)).compile()(jnp.float32(2.0))) == 4.0


def test_a_failing_first_call_restores_the_collector_and_the_next_call_is_still_paused():
  seen = []

  def f(x):
    seen.append(gc.isenabled())
    if x.ndim == 0:
      raise ValueError("no scalars")
    return x

  wrapped = gcpause.FirstCallPaused(jax.jit(f))
  with pytest.raises(ValueError):
    wrapped(jnp.float32(1.0))
  assert gc.isenabled()
  wrapped(jnp.zeros((2,)))
  assert seen == [False, False] and gc.isenabled()


def test_initialise_traces_with_the_collector_paused():
  seen = []

  def init(rng):
    seen.append(gc.isenabled())
    return {"w": jax.random.normal(rng, (3,))}

  replicated = parallel.replicated(parallel.make_mesh())
  out = steps.initialise(init, {"w": replicated}, jax.random.key(0))
  assert out["w"].shape == (3,) and seen == [False] and gc.isenabled()


def test_the_state_shapes_are_traced_with_the_collector_paused(monkeypatch):
  from cnn_flax import experiment, schema
  seen = []
  real = steps.init_state

  def recording(*args, **kwargs):
    seen.append(gc.isenabled())
    return real(*args, **kwargs)

  monkeypatch.setattr(steps, "init_state", recording)
  config = schema.base_config()
  config.model.name, config.dataset.name = "lenet5", "digits"
  experiment.build(config)
  assert seen == [False] and gc.isenabled()
