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


# Table I of LeCun et al. 1998, copied from the paper: one row per S2 map (0-5), one character per C3 map (0-15),
# X where the C3 map takes input from the S2 map.
#              C3 map: 0123456789012345
PAPER_TABLE_1 = {0: "X...XXX..XXXX.XX",
                 1: "XX...XXX..XXXX.X",
                 2: "XXX...XXX..X.XXX",
                 3: ".XXX..XXXX..X.XX",
                 4: "..XXX..XXXX.XX.X",
                 5: "...XXX..XXXX.XXX"}


def _paper_connections():
  """{(S2 map, C3 map)} where Table I has an X."""
  return {(i, j) for i, row in PAPER_TABLE_1.items() for j, mark in enumerate(row) if mark == "X"}


def test_c3_connection_table_is_table_1_of_the_paper():
  paper = _paper_connections()
  assert len(paper) == 60  # 6 maps see 3 inputs, 9 see 4, one sees all 6: 18 + 36 + 6
  module = {(i, j) for j, inputs in enumerate(lenet.C3_CONNECTIONS) for i in inputs}
  assert module == paper


def test_lenet5_paper_c3_kernel_is_zero_exactly_where_table_1_has_no_connection():
  """Probes the C3 layer inside the real model (whatever table it was built with) with one-hot inputs: output map j
  for an impulse at (dy, dx) of input map i, minus the bias, is the effective dense kernel entry [dy, dx, i, j]."""
  import flax.linen as nn
  model = models.create("lenet5_paper", num_classes=10)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  # One-hot impulses in the top-left 5x5 window of a 14x14 S2 output (the size C3 sees), plus an all-zero input:
  # C3's output at (0, 0) is then kernel[dy, dx, i, :] + bias, and bias alone.
  probes = np.zeros((5 * 5 * 6 + 1, 14, 14, 6), np.float32)
  probes[np.arange(150), *np.unravel_index(np.arange(150), (5, 5, 6))] = 1.0
  captured = {}

  def interceptor(next_fun, args, kwargs, context):
    if context.module.name == "c3" and context.method_name == "__call__":
      captured["out"] = next_fun(jnp.asarray(probes), **kwargs)
      return captured["out"]
    return next_fun(*args, **kwargs)

  def c3_output(variables):
    with nn.intercept_methods(interceptor):
      model.apply(variables, jnp.zeros((len(probes), 32, 32, 1)))
    return captured["out"][:, 0, 0, :]

  out = np.asarray(jax.jit(c3_output)(variables))
  kernel = (out[:150] - out[150]).reshape(5, 5, 6, 16)
  paper = _paper_connections()
  for i in range(6):
    for j in range(16):
      if (i, j) in paper:
        assert np.all(kernel[:, :, i, j] != 0), (i, j)
      else:
        assert np.all(kernel[:, :, i, j] == 0), (i, j)  # exactly zero: no weight exists there


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
