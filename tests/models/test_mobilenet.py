"""MobileNet v1: parameter counts for every width multiplier, the last depthwise stride, shapes, one real
forward+backward at width 0.25 and 32 px."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import models
from cnn_flax.models import mobilenet as mobilenet_lib
from cnn_flax.models.layers import DepthwiseSeparable
from tests.models.model_testing import (
  abstract_eval_output,
  abstract_variables,
  count_params,
  host_variables,
  init_apply_dtypes,
  train_and_eval,
)


def table1_count(alpha, num_classes=1000):
  """Parameters of Table 1 written out by hand: conv 3x3x3x32 + BN, 13 x (dw 3x3 + BN, pw 1x1 + BN), FC."""
  widths = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
  c = [int(w * alpha) for w in widths]
  total = 3 * 3 * 3 * c[0] + 2 * c[0]
  for cin, cout in zip(c[:-1], c[1:], strict=True):
    total += 9 * cin + 2 * cin + cin * cout + 2 * cout
  return total + c[-1] * num_classes + num_classes


@pytest.mark.parametrize("alpha,exact,published_millions", [
    (1.0, 4_231_976, 4.231976),  # Howard et al. 2017 / Keras / TF-slim, exact
    (0.75, 2_585_560, 2.59),
    (0.5, 1_331_592, 1.33),
    (0.25, 470_072, 0.47),
])
def test_param_count_per_width_multiplier(alpha, exact, published_millions):
  count = count_params(abstract_variables(models.create("mobilenet_v1", 1000, width_multiplier=alpha), 224)["params"])
  assert count == exact == table1_count(alpha)
  assert round(count / 1e6, len(str(published_millions).split(".")[1])) == published_millions


def test_head_is_dense_on_globally_pooled_features():
  params = abstract_variables(models.create("mobilenet_v1", 1000), 224)["params"]
  assert params["fc"]["kernel"].shape == (1024, 1000)  # = a 1x1 conv with bias on the 1x1 map
  assert params["block1"]["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 32)  # depthwise: one filter per map
  assert params["block13"]["pointwise"]["conv"]["kernel"].shape == (1, 1, 1024, 1024)


def _record_blocks(model, size):
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and isinstance(context.module, DepthwiseSeparable):
      seen[context.module.name] = (context.module.strides, args[0].shape[1:], out.shape[1:])
    return out

  with nn.intercept_methods(record):
    abstract_variables(model, size)
  return seen


def test_last_depthwise_conv_has_stride_1():
  seen = _record_blocks(models.create("mobilenet_v1", 1000), 224)
  assert len(seen) == 13
  assert tuple(seen["block13"][0]) == (1, 1)
  assert seen["block13"][1] == (7, 7, 1024) and seen["block13"][2] == (7, 7, 1024)
  assert tuple(seen["block12"][0]) == (2, 2)
  assert seen["block12"][1] == (14, 14, 512) and seen["block12"][2] == (7, 7, 1024)
  strides = [seen[f"block{i}"][0][0] for i in range(1, 14)]
  assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]  # Table 1 with the last s2 read as s1


@pytest.mark.parametrize("alpha,size", [(1.0, 224), (1.0, 160), (0.5, 128), (0.25, 32), (0.75, 97)])
def test_output_shape_at_several_resolutions(alpha, size):
  model = models.create("mobilenet_v1", num_classes=11, width_multiplier=alpha)
  assert abstract_eval_output(model, size).shape == (2, 11)


def test_se_ratio_adds_se_in_every_block():
  plain = abstract_variables(models.create("mobilenet_v1", 1000, width_multiplier=0.5), 224)["params"]
  se = abstract_variables(models.create("mobilenet_v1", 1000, width_multiplier=0.5, se_ratio=4), 224)["params"]
  added = 0
  for i in range(1, 14):
    assert "se" in se[f"block{i}"] and "se" not in plain[f"block{i}"]
    c = se[f"block{i}"]["depthwise"]["conv"]["kernel"].shape[-1]  # SE acts on the depthwise output
    added += 2 * c * (c // 4) + c // 4 + c
  assert count_params(se) - count_params(plain) == added


def test_forward_backward_width_025_at_32px():
  model = models.create("mobilenet_v1", num_classes=5, width_multiplier=0.25)
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  value, grads, updates, eval_logits = train_and_eval(model, host_variables(model, x), x, target=1)
  assert eval_logits.shape == (2, 5) and np.isfinite(value)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)  # host-side checks: eager jnp ops would each compile
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path
  assert set(updates["batch_stats"]) == {"conv1"} | {f"block{i}" for i in range(1, 14)}
  assert isinstance(model, mobilenet_lib.MobileNetV1)


@pytest.mark.parametrize("name", ["mobilenet_v1"])
def test_bfloat16_compute_keeps_float32_params(name):
  model = models.create(name, num_classes=10, dtype=jnp.bfloat16)
  param_dtypes, out_dtypes = init_apply_dtypes(model, 64, train=True)
  assert param_dtypes == {jnp.dtype(jnp.float32)}
  assert out_dtypes == {jnp.dtype(jnp.bfloat16)}
