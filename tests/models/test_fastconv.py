"""The CPU fast paths compute what lax.conv_general_dilated computes: outputs and gradients, every shape class."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import fastconv

CASES = [  # (input HW, in channels, kernel, out channels, stride, padding, groups)
    (9, 8, 1, 12, 1, "SAME", 1),  # 1x1: a dot over channels
    (9, 8, 1, 12, 2, "VALID", 1),  # strided 1x1 (ResNet projections): slice, then dot
    (8, 8, 1, 4, 2, ((0, 1), (0, 1)), 1),  # padded 1x1
    (9, 6, 3, 6, 1, "SAME", 6),  # depthwise 3x3
    (10, 6, 3, 6, 2, "SAME", 6),  # strided depthwise, TF's (0, 1) padding on an even size
    (9, 6, 3, 6, 2, ((1, 1), (1, 1)), 6),  # torchvision's symmetric padding
    (9, 4, 5, 4, 1, ((2, 2), (2, 2)), 4),  # 5x5 depthwise
    (9, 4, 3, 6, 1, "SAME", 1),  # a 3x3 dense conv: left to XLA
    (4, 5, 3, 7, 1, "SAME", 1),  # a 3x3 conv on a 4x4 map: patches and one product
    (4, 5, 3, 7, 2, "SAME", 1),  # strided, TF's (0, 1) padding: a 2x2 output
    (3, 4, 3, 6, 1, "VALID", 1),  # one output position
    (5, 3, 5, 4, 2, ((2, 2), (2, 2)), 1),  # 5x5, stride 2, symmetric padding: 3x3 output
    (9, 4, 3, 8, 1, "SAME", 2),  # grouped, not depthwise: left to XLA
]


@pytest.mark.parametrize("size, cin, k, cout, stride, padding, groups", CASES)
def test_same_outputs_and_gradients_as_lax(size, cin, k, cout, stride, padding, groups):
  rng = np.random.default_rng(size * cin + k)
  x = jnp.asarray(rng.standard_normal((2, size, size, cin)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, cin // groups, cout)), jnp.float32)  # asymmetric: a swap shows
  args = dict(window_strides=(stride, stride), padding=padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
              feature_group_count=groups)

  def loss(conv, x, w):
    y = conv(x, w, **args)
    return jnp.sum(jnp.sin(y)), y  # a nonlinear loss: gradients depend on every output

  (_, fast), fast_grads = jax.value_and_grad(lambda x, w: loss(fastconv.conv_general_dilated, x, w),
                                             argnums=(0, 1), has_aux=True)(x, w)
  (_, plain), plain_grads = jax.value_and_grad(lambda x, w: loss(jax.lax.conv_general_dilated, x, w),
                                               argnums=(0, 1), has_aux=True)(x, w)
  np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)
  for a, b in zip(fast_grads, plain_grads, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_rewrites_are_taken_on_cpu_and_not_elsewhere(monkeypatch):
  x = jnp.ones((1, 4, 4, 3))
  args = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  pointwise = jax.make_jaxpr(lambda x, w: fastconv.conv_general_dilated(x, w, **args))(x, jnp.ones((1, 1, 3, 5)))
  depthwise = jax.make_jaxpr(lambda x, w: fastconv.conv_general_dilated(x, w, feature_group_count=3, **args))(
      x, jnp.ones((3, 3, 1, 3)))
  small_map = jax.make_jaxpr(lambda x, w: fastconv.conv_general_dilated(x, w, **args))(x, jnp.ones((3, 3, 3, 5)))
  dense = jax.make_jaxpr(lambda x, w: fastconv.conv_general_dilated(x, w, **args))(jnp.ones((1, 5, 5, 3)),
                                                                                  jnp.ones((3, 3, 3, 5)))
  assert "dot_general" in str(pointwise) and "conv_general_dilated" not in str(pointwise)
  assert "conv_general_dilated" not in str(depthwise) and str(depthwise).count("mul") >= 9
  assert "dot_general" in str(small_map) and "conv_general_dilated" not in str(small_map)  # 16 positions
  assert "conv_general_dilated" in str(dense)  # 25 positions: XLA's
  monkeypatch.setenv("CNN_FLAX_FAST_CONV", "0")
  off = jax.make_jaxpr(lambda x, w: fastconv.conv_general_dilated(x, w, **args))(x, jnp.ones((1, 1, 3, 5)))
  assert "conv_general_dilated" in str(off)


def test_a_flax_conv_keeps_its_parameters():
  plain = nn.Conv(8, (1, 1), strides=(2, 2))
  fast = nn.Conv(8, (1, 1), strides=(2, 2), conv_general_dilated=fastconv.conv_general_dilated)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 6, 4)), jnp.float32)
  variables = plain.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, fast.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)
  np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunks", [1, 2])
def test_the_kernel_gradient_as_a_matrix_product(monkeypatch, chunks):
  """Stride-1 convolutions on large inputs: XLA's forward and input gradient, the kernel gradient as one GEMM."""
  monkeypatch.setattr(fastconv, "_chunks", lambda batch, patch_bytes: chunks)  # the scan over batch slices too
  rng = np.random.default_rng(chunks)
  x = jnp.asarray(rng.standard_normal((2, 40, 40, 64)), jnp.float32)  # 40*40*64 = 102,400 >= the threshold
  w = jnp.asarray(rng.standard_normal((3, 3, 64, 64)) * 0.05, jnp.float32)
  args = dict(window_strides=(1, 1), padding=((1, 0), (2, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda w: jnp.sum(fastconv.conv_general_dilated(x, w, **args))))(w))
  assert "custom_vjp" in jaxpr or "dot_general" in jaxpr
  loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w, **args)))
  fast = jax.grad(loss(fastconv.conv_general_dilated), argnums=(0, 1))(x, w)
  plain = jax.grad(loss(jax.lax.conv_general_dilated), argnums=(0, 1))(x, w)
  for a, b in zip(fast, plain, strict=True):  # sums of 3,200 products: float32 rounding, relative to the scale
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.abs(b).max()))


def test_batch_slices_for_the_patches():
  assert fastconv._chunks(16, 100 * 2**20) == 1
  assert fastconv._chunks(16, 1000 * 2**20) == 4  # 250 MiB each: under the 256 MiB budget
  assert fastconv._chunks(6, 1000 * 2**20) == 6  # the divisors of 6: 1, 2, 3, 6
