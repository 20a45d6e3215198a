"""VGG: published parameter counts of every configuration, structure, shapes, one real forward+backward."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import models
from cnn_flax.models import vgg as vgg_lib
from cnn_flax.models.layers import LocalResponseNorm
from tests.models.model_testing import (
  abstract_eval_output,
  abstract_variables,
  count_params,
  host_variables,
  init_apply_dtypes,
  run_compiled,
  train_and_eval,
)


@pytest.mark.parametrize("name,expected", [
    ("vgg11", 132_863_336),
    ("vgg11_lrn", 132_863_336),  # LRN has no parameters
    ("vgg13", 133_047_848),
    ("vgg16_c", 133_638_952),
    ("vgg16", 138_357_544),
    ("vgg19", 143_667_240),
    ("vgg11_bn", 132_868_840),
    ("vgg13_bn", 133_053_736),
    ("vgg16_bn", 138_365_992),
    ("vgg19_bn", 143_678_248),
])
def test_param_count_matches_published(name, expected):
  model = models.create(name, num_classes=1000)
  assert isinstance(model, vgg_lib.VGG)
  assert models.info(name).input_size == 224
  assert count_params(abstract_variables(model, 224)["params"]) == expected


@pytest.mark.parametrize("name,weight_layers", [("vgg11", 11), ("vgg13", 13), ("vgg16_c", 16), ("vgg16", 16),
                                                ("vgg19", 19)])
def test_depth_counts_weight_layers(name, weight_layers):
  params = abstract_variables(models.create(name, 1000), 224)["params"]
  assert len(params) == weight_layers  # convs + 3 FC layers, one param collection each


def test_config_c_has_1x1_as_third_conv_of_stages_3_to_5():
  params = abstract_variables(models.create("vgg16_c", 1000), 224)["params"]
  for stage, channels in ((3, 256), (4, 512), (5, 512)):
    assert params[f"conv{stage}_3"]["kernel"].shape == (1, 1, channels, channels)
    assert params[f"conv{stage}_2"]["kernel"].shape == (3, 3, channels, channels)
  d = abstract_variables(models.create("vgg16", 1000), 224)["params"]
  assert d["conv3_3"]["kernel"].shape == (3, 3, 256, 256)


def test_bn_variants_have_batch_stats_and_plain_ones_do_not():
  assert "batch_stats" in abstract_variables(models.create("vgg16_bn", 1000), 224)
  assert "batch_stats" not in abstract_variables(models.create("vgg16", 1000), 224)


class _Stop(Exception):
  pass


def test_a_lrn_normalises_relu_of_first_conv_only():
  """conv1_1's output is replaced by a fixed map with negatives; the LRN must see exactly its ReLU, and it must be
  the only LRN before the next conv sees the pooled result."""
  fake = jnp.asarray(np.random.default_rng(0).normal(size=(1, 32, 32, 64)), jnp.float32)
  seen = []

  def intercept(next_fun, args, kwargs, context):
    name = context.module.name
    if context.method_name != "__call__" or name is None:
      return next_fun(*args, **kwargs)
    seen.append((name, args[0]))
    if name == "conv1_1":
      return fake
    if name == "conv2_1":
      raise _Stop
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(intercept), pytest.raises(_Stop):
    models.create("vgg11_lrn", 10).apply({"params": {}}, jnp.zeros((1, 32, 32, 3)), train=False)
  assert [n for n, _ in seen] == ["conv1_1", "lrn", "conv2_1"]
  np.testing.assert_array_equal(seen[1][1], jax.nn.relu(fake))
  expected = nn.max_pool(LocalResponseNorm().apply({}, jax.nn.relu(fake)), (2, 2), strides=(2, 2))
  np.testing.assert_allclose(seen[2][1], expected, rtol=1e-6)


@pytest.mark.parametrize("name,size", [("vgg16", 224), ("vgg16", 32), ("vgg19_bn", 160), ("vgg16_c", 256)])
def test_output_shape_at_several_resolutions(name, size):
  model = models.create(name, num_classes=10)
  assert abstract_eval_output(model, size).shape == (2, 10)


def test_forward_backward_small():
  """A narrow VGG exercising every code path (BN, LRN, 1x1 conv, adaptive pool, dropout) at 32 px."""
  model = vgg_lib.VGG(stages=(((8, 3),), ((16, 3), (16, 1)), ((16, 3),)), batch_norm=True, lrn=True,
                      num_classes=4, classifier_width=16)
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  variables = host_variables(model, x)
  value, grads, updates, eval_logits = train_and_eval(model, variables, x, target=0)
  assert eval_logits.shape == (2, 4) and np.isfinite(value)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)  # host-side checks: eager jnp ops would each compile
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path
  # Training updated the running statistics (use_running_average=not train).
  assert not np.allclose(updates["batch_stats"]["bn1_1"]["mean"], variables["batch_stats"]["bn1_1"]["mean"])


def test_vgg11_real_forward_at_32px():
  model = models.create("vgg11", num_classes=10, classifier_width=64)
  x = jax.random.normal(jax.random.key(5), (1, 32, 32, 3))
  logits = run_compiled(lambda v, x: model.apply(v, x, train=False), host_variables(model, x), x)
  assert logits.shape == (1, 10) and np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize("name", ["vgg11_lrn", "vgg16_bn"])
def test_bfloat16_compute_keeps_float32_params(name):
  model = models.create(name, num_classes=10, dtype=jnp.bfloat16)
  param_dtypes, out_dtypes = init_apply_dtypes(model, 64, train=False)
  assert param_dtypes == {jnp.dtype(jnp.float32)}
  assert out_dtypes == {jnp.dtype(jnp.bfloat16)}
