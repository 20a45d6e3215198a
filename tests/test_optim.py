"""Learning-rate schedules and optimizers built from the config."""
import jax
import jax.numpy as jnp
import numpy as np
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
  assert float(s(60)) < float(s(30)) < 1.0


@pytest.mark.parametrize("name", ["sgd", "adamw", "rmsprop"])
def test_weight_decay_touches_kernels_not_biases(tiny_config, name):
  tiny_config.optimizer.name = name
  tiny_config.optimizer.weight_decay = 0.1
  tx = optim.make_optimizer(tiny_config, lambda _: 0.1)
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  assert float(jnp.abs(updates["kernel"]).sum()) > 0
  assert float(jnp.abs(updates["bias"]).sum()) == 0
