"""Learning-rate schedules and optimizers built from the config."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_flax import optim


def test_step_schedule_decays_at_fractions_of_training(tiny_config):
  tiny_config.schedule.name = "step"
  tiny_config.optimizer.learning_rate = 0.1
  tiny_config.schedule.decay_at = (0.5, 0.75)
  s = optim.learning_rate_schedule(tiny_config, total_steps=100, steps_per_epoch=10)
  np.testing.assert_allclose([s(0), s(49), s(50), s(74), s(75), s(99)], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001],
                             rtol=1e-6)


def test_warmup_then_cosine_reaches_the_end_factor(tiny_config):
  tiny_config.schedule.name = "cosine"
  tiny_config.schedule.warmup_epochs = 1.0
  tiny_config.schedule.end_factor = 0.1
  tiny_config.optimizer.learning_rate = 1.0
  s = optim.learning_rate_schedule(tiny_config, total_steps=110, steps_per_epoch=10)
  assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(110)) == pytest.approx(0.1)
  # Half a cosine from the peak to the end factor over the 100 steps after warmup.
  for step in (30, 60, 85):
    expected = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (step - 10) / 100))
    assert float(s(step)) == pytest.approx(expected, rel=1e-6), step


def test_step_decay_points_are_fractions_of_the_whole_run_even_after_warmup(tiny_config):
  tiny_config.schedule.name = "step"
  tiny_config.schedule.warmup_epochs = 2.0
  tiny_config.schedule.decay_at = (0.5, 0.75)
  tiny_config.optimizer.learning_rate = 0.1
  s = optim.learning_rate_schedule(tiny_config, total_steps=100, steps_per_epoch=10)
  np.testing.assert_allclose([s(0), s(10), s(20), s(49), s(50), s(74), s(75)],
                             [0.0, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def _by_hand(name, nesterov, params, grads, lr, wd, momentum, b1=0.9, b2=0.999, decay=0.9, eps=1e-8):
  """The parameters after each step, written out from the update rules (numpy float64, no optax).

  Only kernels (ndim > 1) are decayed. sgd and rmsprop: coupled L2, added to the gradient before momentum or the
  RMS scaling; adamw: decoupled, added to the Adam direction after it was computed.
  """
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  state = {k: {"trace": 0.0, "m": 0.0, "v": 0.0, "nu": 0.0} for k in params}
  history = []
  for t, g in enumerate(grads, start=1):
    for k, p in params.items():
      decay_term = wd * p if p.ndim > 1 else 0.0
      s, gk = state[k], np.asarray(g[k], np.float64)
      if name == "sgd":
        d = gk + decay_term
        s["trace"] = d + momentum * s["trace"]
        update = d + momentum * s["trace"] if nesterov else s["trace"]
      elif name == "adamw":
        s["m"] = b1 * s["m"] + (1 - b1) * gk
        s["v"] = b2 * s["v"] + (1 - b2) * gk ** 2
        m_hat, v_hat = s["m"] / (1 - b1 ** t), s["v"] / (1 - b2 ** t)
        update = m_hat / (np.sqrt(v_hat) + eps) + decay_term
      else:  # rmsprop, eps inside the square root as in TensorFlow's RMSProp
        d = gk + decay_term
        s["nu"] = decay * s["nu"] + (1 - decay) * d ** 2
        s["trace"] = d / np.sqrt(s["nu"] + eps) + momentum * s["trace"]
        update = s["trace"]
      params[k] = p - lr * update
    history.append({k: v.copy() for k, v in params.items()})
  return history


@pytest.mark.parametrize("name, nesterov", [("sgd", False), ("sgd", True), ("adamw", False), ("rmsprop", False)])
def test_weight_decay_updates_are_exactly_the_optimizers_rule(tiny_config, name, nesterov):
  lr, wd, momentum = 0.1, 0.05, 0.9
  tiny_config.optimizer.name = name
  tiny_config.optimizer.nesterov = nesterov
  tiny_config.optimizer.weight_decay = wd
  tiny_config.optimizer.momentum = momentum
  tx = optim.make_optimizer(tiny_config, lambda _: lr)
  params = {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.5]]), "bias": jnp.array([1.0, -1.0])}
  # Two steps, so that momentum and second moments carry the decay term (or not) into the next update.
  grads = [{"kernel": jnp.array([[0.1, 0.2], [-0.3, 0.4]]), "bias": jnp.array([0.5, -0.5])},
           {"kernel": jnp.array([[-0.2, 0.0], [0.3, 0.1]]), "bias": jnp.array([0.25, 0.0])}]
  expected = _by_hand(name, nesterov, params, grads, lr, wd, momentum)
  opt_state = tx.init(params)
  for step, g in enumerate(grads):
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
    for key in ("kernel", "bias"):
      np.testing.assert_allclose(params[key], expected[step][key], rtol=1e-5, atol=1e-6,  # float32 vs float64
                                 err_msg=f"{name} {key} after step {step + 1}")


@pytest.mark.parametrize("name", ["sgd", "adamw", "rmsprop"])
def test_weight_decay_alone_moves_kernels_not_biases(tiny_config, name):
  tiny_config.optimizer.name = name
  tiny_config.optimizer.weight_decay = 0.1
  tx = optim.make_optimizer(tiny_config, lambda _: 0.1)
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  assert float(jnp.abs(updates["kernel"]).sum()) > 0
  assert float(jnp.abs(updates["bias"]).sum()) == 0
