"""Shared layers: LRN against a direct numpy implementation of the paper's formula, ConvBN, SqueezeExcite,
DepthwiseSeparable, adaptive average pooling."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models.layers import ConvBN, DepthwiseSeparable, LocalResponseNorm, SqueezeExcite, adaptive_avg_pool
from tests.models.model_testing import RNGS, run_compiled

KEY = RNGS["params"]  # an "rbg" key: cheap to compile on CPU


def init(layer, *args, **kwargs):
  """``layer.init`` as one compiled program (op-by-op execution compiles every op separately: slower here)."""
  return jax.jit(functools.partial(layer.init, **kwargs))(KEY, *args)


def apply(layer, variables, *args, **kwargs):
  return jax.jit(functools.partial(layer.apply, **kwargs))(variables, *args)


def lrn_reference(a, size=5, alpha=1e-4, beta=0.75, k=2.0):
  """Krizhevsky et al. 2012, sec. 3.3, written out: b[c] = a[c] / (k + alpha sum_{j=c-n/2}^{c+n/2} a[j]^2)^beta."""
  a = np.asarray(a, np.float64)
  channels = a.shape[-1]
  b = np.empty_like(a)
  for c in range(channels):
    lo, hi = max(0, c - size // 2), min(channels - 1, c + size // 2)
    b[..., c] = a[..., c] / (k + alpha * np.sum(a[..., lo:hi + 1] ** 2, axis=-1)) ** beta
  return b


@pytest.mark.parametrize("channels", [3, 5, 16])
def test_lrn_matches_paper_formula(channels):
  # Large activations so that the normaliser is far from k and a wrong window or alpha would show.
  a = np.random.default_rng(channels).normal(scale=30.0, size=(2, 4, 3, channels)).astype(np.float32)
  out = LocalResponseNorm().apply({}, jnp.asarray(a))
  ref = lrn_reference(a)
  assert np.max(np.abs(ref / a - 1.0 / 2.0 ** 0.75)) > 1e-2  # the test input really exercises the normaliser
  np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_lrn_alpha_over_size_is_the_pytorch_caffe_convention():
  a = np.random.default_rng(1).normal(scale=30.0, size=(1, 3, 3, 8)).astype(np.float32)
  out = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0, alpha_over_size=True).apply({}, jnp.asarray(a))
  np.testing.assert_allclose(out, lrn_reference(a, alpha=1e-4 / 5, k=1.0), rtol=1e-5)
  paper = LocalResponseNorm(k=1.0).apply({}, jnp.asarray(a))
  assert not np.allclose(out, paper, rtol=1e-3)


def test_lrn_keeps_compute_dtype():
  x = jnp.ones((1, 2, 2, 8), jnp.bfloat16) * 100
  out = LocalResponseNorm(dtype=jnp.bfloat16).apply({}, x)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), lrn_reference(np.full((1, 2, 2, 8), 100.0)), rtol=1e-2)


def test_convbn_default_padding_is_symmetric_like_pytorch():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 8, 3)), jnp.float32)
  layer = ConvBN(4, (3, 3), strides=(2, 2), use_bn=False, act=None)
  variables = init(layer, x, train=False)
  kernel = variables["params"]["conv"]["kernel"]
  out = apply(layer, variables, x, train=False)
  conv = lambda pad: jax.lax.conv_general_dilated(x, kernel, (2, 2), pad,
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(out, conv(((1, 1), (1, 1))), rtol=1e-5, atol=1e-6)
  assert not np.allclose(out, conv("SAME"), atol=1e-3)  # Flax 'SAME' pads (0, 1) here


def test_convbn_batchnorm_momentum_epsilon_and_train_flag():
  x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 5, 2)), jnp.float32)
  layer = ConvBN(3, (1, 1), act=None)
  variables = init(layer, x, train=False)
  assert set(variables["params"]) == {"conv", "bn"} and "bias" not in variables["params"]["conv"]
  y_train, updates = apply(layer, variables, x, train=True, mutable=["batch_stats"])
  z = np.asarray(x) @ np.asarray(variables["params"]["conv"]["kernel"][0, 0])  # the 1x1 conv on the host
  mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
  np.testing.assert_allclose(y_train, (z - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
  stats = updates["batch_stats"]["bn"]
  np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5)  # momentum 0.9 from mean 0
  # Flax folds the biased batch variance into the running one (PyTorch uses the unbiased one).
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-4)
  # Inference uses the running statistics (use_running_average = not train).
  y_eval = apply(layer, {**variables, **updates}, x, train=False)
  np.testing.assert_allclose(y_eval, (z - stats["mean"]) / np.sqrt(stats["var"] + 1e-5), rtol=1e-4, atol=1e-4)


def test_convbn_options():
  x = -jnp.ones((1, 6, 6, 4))
  plain = ConvBN(8, (3, 3), use_bn=False, use_bias=True, act=None, groups=2)
  params = jax.eval_shape(functools.partial(plain.init, train=False), KEY, x)["params"]
  assert set(params) == {"conv"}
  assert params["conv"]["kernel"].shape == (3, 3, 2, 8) and params["conv"]["bias"].shape == (8,)
  relu = ConvBN(8, use_bn=False, use_bias=True)
  ones = {"params": {"conv": {"kernel": np.ones((3, 3, 4, 8), np.float32), "bias": np.zeros(8, np.float32)}}}
  out = apply(relu, ones, x, train=False)
  assert float(out.max()) == 0.0  # all pre-activations are negative; ReLU applied
  assert float(apply(relu.clone(act=None), ones, x, train=False).min()) < 0
  half = ConvBN(8, dtype=jnp.bfloat16)
  v, y = jax.eval_shape(lambda k, x: (half.init(k, x, train=False), half.init_with_output(k, x, train=False)[0]),
                        KEY, x)
  assert y.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))  # parameters stay float32


def test_squeeze_excite_matches_numpy():
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 32)).astype(np.float32)
  se = SqueezeExcite(ratio=16)
  params = init(se, jnp.asarray(x))["params"]
  assert params["reduce"]["kernel"].shape == (32, 2) and params["expand"]["kernel"].shape == (2, 32)
  p = jax.tree.map(np.asarray, params)
  s = x.mean(axis=(1, 2))
  s = np.maximum(s @ p["reduce"]["kernel"] + p["reduce"]["bias"], 0)
  s = 1 / (1 + np.exp(-(s @ p["expand"]["kernel"] + p["expand"]["bias"])))
  np.testing.assert_allclose(apply(se, {"params": params}, jnp.asarray(x)), x * s[:, None, None, :], rtol=1e-5)
  narrow = jax.eval_shape(SqueezeExcite(ratio=16).init, KEY, jnp.ones((1, 2, 2, 8)))["params"]
  assert narrow["reduce"]["kernel"].shape == (8, 1)  # max(1, C // ratio)


def test_depthwise_separable_structure_and_gradients():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 6)), jnp.float32)
  block = DepthwiseSeparable(10, strides=(2, 2), se_ratio=2)
  variables = init(block, x, train=False)
  params = variables["params"]
  assert params["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 6)
  assert params["pointwise"]["conv"]["kernel"].shape == (1, 1, 6, 10)
  assert params["se"]["reduce"]["kernel"].shape == (6, 3)

  def loss(params):
    out, _ = block.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    assert out.shape == (2, 4, 4, 10)
    return jnp.sum(out ** 2)

  grads = run_compiled(jax.grad(loss), params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.abs(np.asarray(g)).max() > 0, path  # every parameter gets a gradient (checked on the host)


def adaptive_reference(x, out):
  n, h, w, c = x.shape
  y = np.empty((n, out, out, c))
  for i in range(out):
    for j in range(out):
      h0, h1 = (i * h) // out, -(-((i + 1) * h) // out)
      w0, w1 = (j * w) // out, -(-((j + 1) * w) // out)
      y[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  return y


@pytest.mark.parametrize("size,out", [(13, 6), (14, 4), (5, 7), (1, 7), (12, 6), (6, 6)])
def test_adaptive_avg_pool_matches_pytorch_bins(size, out):
  x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
  np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), out), adaptive_reference(x, out), rtol=1e-5,
                             atol=1e-6)
