"""LeNet-5: parameter counts against the published figures, the C3 connection table, shapes, training mode."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import models
from cnn_flax.models import lenet


def _param_counts(name, num_classes=10):
  model = models.create(name, num_classes=num_classes)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False))
  return {layer: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
          for layer, params in variables["params"].items()}


def test_lenet5_has_61706_parameters():
  assert sum(_param_counts("lenet5").values()) == 61_706


def test_lenet5_paper_layers_up_to_f6_hold_the_papers_60000_parameters():
  counts = _param_counts("lenet5_paper")
  assert counts == {"c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120, "f6": 10_164, "output": 850}
  assert sum(v for k, v in counts.items() if k != "output") == 60_000


def test_c3_connection_table_matches_table_1_of_the_paper():
  sizes = [len(c) for c in lenet.C3_CONNECTIONS]
  assert sizes == [3] * 6 + [4] * 9 + [6]
  assert all(len(set(c)) == len(c) and max(c) < 6 for c in lenet.C3_CONNECTIONS)


def test_partial_conv_ignores_unconnected_input_maps():
  layer = lenet.PartialConv(((0,), (1, 2)), in_features=3)
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 3))
  variables = layer.init(jax.random.key(1), x)
  y = layer.apply(variables, x)
  x_changed = x.at[..., 2].set(0.0)  # output map 0 does not see input map 2; map 1 does
  y_changed = layer.apply(variables, x_changed)
  np.testing.assert_allclose(y[..., 0], y_changed[..., 0])
  assert not np.allclose(y[..., 1], y_changed[..., 1])


@pytest.mark.parametrize("name", ["lenet5", "lenet5_paper"])
def test_forward_shapes_and_dtype(name):
  model = models.create(name, num_classes=7, dtype=jnp.bfloat16)
  x = jnp.zeros((3, 32, 32, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  logits = model.apply(variables, x, train=True)
  assert logits.shape == (3, 7) and logits.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))  # params stay float32


def test_registry_rejects_unknown_models_and_overrides():
  from cnn_flax.errors import UserError
  with pytest.raises(UserError, match="unknown model 'lenet6'"):
    models.create("lenet6", 10)
  with pytest.raises(UserError, match="does not accept"):
    models.create("lenet5", 10, width_multiplier=2.0)
