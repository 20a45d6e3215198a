"""AlexNet: published parameter counts, LRN placement, shapes, one real forward+backward."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import models
from cnn_flax.models.layers import LocalResponseNorm
from tests.models.model_testing import (
  abstract_eval_output,
  abstract_variables,
  count_params,
  host_variables,
  init_apply_dtypes,
  lrn_calls,
  run_compiled,
)


@pytest.mark.parametrize("name,size,expected", [
    ("alexnet", 224, 61_100_840),  # torchvision
    ("alexnet_paper", 227, 60_965_224),  # Krizhevsky et al. 2012
])
def test_param_count_matches_published(name, size, expected):
  assert models.info(name).input_size == size
  assert count_params(abstract_variables(models.create(name, num_classes=1000), size)["params"]) == expected


def test_paper_groups_two_on_conv2_4_5_only():
  params = abstract_variables(models.create("alexnet_paper", 1000), 227)["params"]
  # HWIO kernels: grouped convs see half of the input maps.
  assert params["conv1"]["kernel"].shape == (11, 11, 3, 96)
  assert params["conv2"]["kernel"].shape == (5, 5, 48, 256)
  assert params["conv3"]["kernel"].shape == (3, 3, 256, 384)
  assert params["conv4"]["kernel"].shape == (3, 3, 192, 384)
  assert params["conv5"]["kernel"].shape == (3, 3, 192, 256)
  assert params["fc6"]["kernel"].shape == (6 * 6 * 256, 4096)


@pytest.mark.parametrize("name,size", [("alexnet", 224), ("alexnet", 256), ("alexnet", 100),
                                       ("alexnet_paper", 227), ("alexnet_paper", 300)])
def test_output_shape_at_several_resolutions(name, size):
  model = models.create(name, num_classes=7)
  assert abstract_eval_output(model, size).shape == (2, 7)


def test_paper_feature_map_sizes():
  """227 -> conv1 55 -> pool 27 -> conv2 27 -> pool 13 -> conv3-5 13 -> pool 6 (no adaptive pooling needed)."""
  shapes = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and context.module.name:
      shapes[context.module.name] = out.shape[1:]
    return out

  model = models.create("alexnet_paper", 1000)
  with nn.intercept_methods(record):
    abstract_variables(model, 227)
  assert shapes["conv1"] == (55, 55, 96) and shapes["lrn1"] == (55, 55, 96)
  assert shapes["conv2"] == (27, 27, 256) and shapes["lrn2"] == (27, 27, 256)
  assert shapes["conv5"] == (13, 13, 256)


class _Stop(Exception):
  pass


def test_paper_lrn_follows_relu_of_conv1_and_conv2_then_pool():
  """Replaces conv1/conv2 outputs with fixed maps holding negative values, and checks (concretely, without
  parameters) that lrn1 sees relu(conv1), conv2 sees maxpool(lrn1(.)), lrn2 sees relu(conv2)."""
  rng = np.random.default_rng(0)
  fake = {"conv1": jnp.asarray(rng.normal(size=(1, 55, 55, 96)), jnp.float32),
          "conv2": jnp.asarray(rng.normal(size=(1, 27, 27, 256)), jnp.float32)}
  seen = {}

  def intercept(next_fun, args, kwargs, context):
    name = context.module.name
    if context.method_name != "__call__" or name is None:
      return next_fun(*args, **kwargs)
    seen.setdefault("order", []).append(name)
    seen[name] = args[0]
    if name in fake:
      return fake[name]  # skip the real conv: no parameters needed
    if name == "conv3":
      raise _Stop
    return next_fun(*args, **kwargs)

  model = models.create("alexnet_paper", 1000)
  with nn.intercept_methods(intercept), pytest.raises(_Stop):
    model.apply({"params": {}}, jnp.zeros((1, 227, 227, 3)), train=False)
  assert seen["order"] == ["conv1", "lrn1", "conv2", "lrn2", "conv3"]
  lrn = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
  np.testing.assert_array_equal(seen["lrn1"], jax.nn.relu(fake["conv1"]))
  pooled = nn.max_pool(lrn.apply({}, jax.nn.relu(fake["conv1"])), (3, 3), strides=(2, 2))
  np.testing.assert_allclose(seen["conv2"], pooled, rtol=1e-6)
  np.testing.assert_array_equal(seen["lrn2"], jax.nn.relu(fake["conv2"]))


def test_torchvision_alexnet_has_no_lrn():
  assert lrn_calls(models.create("alexnet", 1000), 224) == []


@pytest.mark.parametrize("name,size", [("alexnet", 64), ("alexnet_paper", 67)])
def test_forward_backward_small(name, size):
  model = models.create(name, num_classes=5, classifier_width=32)
  x = jax.random.normal(jax.random.key(3), (2, size, size, 3))
  labels = jnp.array([1, 3])

  def run(variables, x):
    def loss(params):
      logits = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(4, impl="rbg")})
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    value, grads = jax.value_and_grad(loss)(variables["params"])
    eval_logits = model.apply(variables, x, train=False)
    return value, grads, eval_logits

  value, grads, eval_logits = run_compiled(run, host_variables(model, x), x)
  assert eval_logits.shape == (2, 5) and np.isfinite(value)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)  # host-side checks: eager jnp ops would each compile
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path


def test_paper_initialisation():
  """Sec. 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers, 0 in conv1, conv3 and
  the output layer. Reads each layer's initialisers while tracing (no compiled init) and evaluates them."""
  inits = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, (nn.Conv, nn.Dense)):
      inits[context.module.name] = (context.module.kernel_init, context.module.bias_init)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    abstract_variables(models.create("alexnet_paper", 1000), 227)
  assert len(inits) == 8
  key = jax.random.key(0, impl="rbg")
  for name, (_, bias_init) in inits.items():
    expected = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
    np.testing.assert_array_equal(np.asarray(bias_init(key, (4,))), expected, err_msg=name)
  kernel = np.asarray(inits["conv3"][0](key, (3, 3, 256, 384)))
  assert abs(kernel.std() - 0.01) < 2e-4 and abs(kernel.mean()) < 2e-4


@pytest.mark.parametrize("name", ["alexnet", "alexnet_paper"])
def test_bfloat16_compute_keeps_float32_params(name):
  model = models.create(name, num_classes=10, dtype=jnp.bfloat16)
  param_dtypes, out_dtypes = init_apply_dtypes(model, 227, train=False)
  assert param_dtypes == {jnp.dtype(jnp.float32)}
  assert out_dtypes == {jnp.dtype(jnp.bfloat16)}
