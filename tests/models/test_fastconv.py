"""The CPU fast paths compute what lax computes (convolutions, max pooling): outputs and gradients, every shape.
Convolutions are checked both ways: in oneDNN (the default where it builds) and with XLA's rewrites (without it)."""
import platform
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import fastconv, fastpool, onednn

ONEDNN_EXPECTED = platform.system() == "Linux" and platform.machine() == "x86_64" and shutil.which("c++")


def use_path(monkeypatch, path: str) -> None:
  """Convolutions in oneDNN, or (`xla`) with XLA's rewrites alone."""
  if path == "xla":
    monkeypatch.setenv("CNN_FLAX_ONEDNN", "0")
  elif not onednn.available():
    pytest.skip("oneDNN is not available here")


@pytest.fixture(params=["onednn", "xla"])
def conv_path(request, monkeypatch):
  """Runs a test with oneDNN's convolutions, then with XLA's rewrites alone."""
  use_path(monkeypatch, request.param)
  return request.param

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
ONEDNN_CASES = [  # oneDNN's geometry, checked in oneDNN only (XLA's rewrites meet the same kinds of shape above)
    # Channel counts in oneDNN's blocks of 8 and 16, where it picks blocked kernel layouts:
    (12, 16, 3, 32, 1, "SAME", 1),
    (16, 3, 7, 16, 2, ((3, 3), (3, 3)), 1),  # ResNet's stem
    (8, 32, 1, 64, 2, "VALID", 1),
    (8, 32, 3, 32, 2, "SAME", 32),  # strided depthwise
    (6, 16, 3, 32, 1, "SAME", 2),  # two groups
    (9, 4, 3, 8, 1, "SAME", 4),  # depth multiplier 2
    (10, 3, 3, 8, 2, "VALID", 1),  # the last input column unread (AlexNet's 11x11/4 stem at 224 px)
    (11, 8, 3, 8, 2, "SAME", 8),  # depthwise, the same
]


@pytest.mark.parametrize("path, size, cin, k, cout, stride, padding, groups",
                         [("onednn", *case) for case in CASES + ONEDNN_CASES] + [("xla", *case) for case in CASES])
def test_same_outputs_and_gradients_as_lax(monkeypatch, path, size, cin, k, cout, stride, padding, groups):
  use_path(monkeypatch, path)
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
  monkeypatch.setenv("CNN_FLAX_ONEDNN", "0")  # XLA's rewrites: what runs without oneDNN
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


@pytest.mark.skipif(not ONEDNN_EXPECTED, reason="oneDNN's wheel is for Linux x86-64 and needs a C++ compiler")
def test_onednn_builds_where_its_wheel_and_a_compiler_are():
  """requirements.txt installs oneDNN here: the handlers must build, or the CPU path silently loses its speed."""
  assert onednn._load() is None
  assert onednn.available()


def test_onednn_takes_single_device_float32_and_nothing_else(monkeypatch):
  if not onednn.available():
    pytest.skip("oneDNN is not available here")
  args = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  # A new function each time: JAX caches traces by function, and the choice is made while tracing.
  traced = lambda x, w: str(jax.make_jaxpr(lambda x, w: fastconv.conv_general_dilated(x, w, **args))(x, w))
  x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 5))
  assert "CnnFlaxConvForward" in traced(x, w)
  assert "CnnFlaxConvForward" not in traced(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
  batch = jax.export.symbolic_shape("b")[0]  # a batch-polymorphic export: portable StableHLO only
  exported = jax.export.export(jax.jit(lambda x, w: fastconv.conv_general_dilated(x, w, **args)))(
      jax.ShapeDtypeStruct((batch, 6, 6, 3), jnp.float32), w)
  assert "CnnFlaxConv" not in exported.mlir_module()
  inside_shard_map = jax.shard_map(lambda x: fastconv.conv_general_dilated(x, w, **args),
                                   mesh=jax.make_mesh((1,), ("data",)), in_specs=jax.P(), out_specs=jax.P())
  assert "CnnFlaxConvForward" not in str(jax.make_jaxpr(inside_shard_map)(x))  # per-device BatchNorm's body
  monkeypatch.setattr(jax, "device_count", lambda: 2)  # a mesh: the custom call has no sharding rule
  assert "CnnFlaxConvForward" not in traced(x, w)
  monkeypatch.undo()
  monkeypatch.setenv("CNN_FLAX_ONEDNN", "0")
  assert "CnnFlaxConvForward" not in traced(x, w)


def test_onednn_under_vmap_is_lax(conv_path):
  """Ten-crop evaluation vmaps the model over the crops: the custom call runs once per crop."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((3, 2, 7, 7, 4)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 4, 8)), jnp.float32)
  args = dict(window_strides=(2, 2), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  fast = jax.jit(jax.vmap(lambda x: fastconv.conv_general_dilated(x, w, **args)))(x)
  np.testing.assert_allclose(fast, jax.vmap(lambda x: jax.lax.conv_general_dilated(x, w, **args))(x),
                             rtol=1e-5, atol=1e-5)


def test_a_flax_conv_keeps_its_parameters():
  plain = nn.Conv(8, (1, 1), strides=(2, 2))
  fast = nn.Conv(8, (1, 1), strides=(2, 2), conv_general_dilated=fastconv.conv_general_dilated)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 6, 4)), jnp.float32)
  variables = plain.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, fast.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)
  np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunks, kernel, stride", [(1, 3, 1), (2, 3, 1), (1, 7, 2), (2, 3, 2)])
def test_the_kernel_gradient_as_a_matrix_product(monkeypatch, chunks, kernel, stride):
  """Large output gradients: XLA's forward and input gradient, the kernel gradient as one GEMM (strided too)."""
  monkeypatch.setenv("CNN_FLAX_ONEDNN", "0")  # a rewrite of XLA's path: without oneDNN
  monkeypatch.setattr(fastconv, "_chunks", lambda batch, patch_bytes: chunks)  # the scan over batch slices too
  rng = np.random.default_rng(chunks)
  x = jnp.asarray(rng.standard_normal((2, 20, 20, 16)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, 16, 64)) * 0.05, jnp.float32)
  args = dict(window_strides=(stride, stride), padding=((1, 0), (2, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  kernel_gradient = lambda: str(jax.make_jaxpr(jax.grad(
      lambda w: jnp.sum(fastconv.conv_general_dilated(x, w, **args))))(w))
  assert "custom_vjp" not in kernel_gradient()  # an output gradient of at most 200 KiB: XLA's
  monkeypatch.setattr(fastconv, "_PRODUCT_MIN_GRADIENT_BYTES", 2 * 18 * 18 * 64 * 4 // stride**2 // 2)
  assert "custom_vjp" in kernel_gradient()
  loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w, **args)))
  fast = jax.grad(loss(fastconv.conv_general_dilated), argnums=(0, 1))(x, w)
  plain = jax.grad(loss(jax.lax.conv_general_dilated), argnums=(0, 1))(x, w)
  for a, b in zip(fast, plain, strict=True):  # sums of hundreds of products: float32 rounding, relative to the scale
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.abs(b).max()))


def test_batch_slices_for_the_patches():
  assert fastconv._chunks(16, 100 * 2**20) == 1
  assert fastconv._chunks(16, 1000 * 2**20) == 4  # 250 MiB each: under the 256 MiB budget
  assert fastconv._chunks(6, 1000 * 2**20) == 6  # the divisors of 6: 1, 2, 3, 6


POOLS = [  # (input HW, window, stride, padding): every max pool in the zoo, and the odd cases
    (8, 2, 2, "VALID"),  # VGG, LeNet
    (9, 3, 2, ((1, 1), (1, 1))),  # ResNet's and DenseNet's stems (torchvision's symmetric padding)
    (11, 3, 2, "VALID"),  # AlexNet's overlapping pooling
    (10, 3, 2, ((0, 1), (0, 1))),  # GoogLeNet's ceil-mode pooling
    (6, 3, 1, ((1, 1), (1, 1))),  # GoogLeNet's branch pool: every input in up to nine windows
    (7, 2, 2, "SAME"),  # a string padding resolved as Flax resolves it
    (5, 3, 3, "VALID"),  # one window per position, an edge column left out
]


@pytest.mark.parametrize("size, window, stride, padding", POOLS)
def test_max_pool_has_the_same_outputs_and_gradients_as_flax(size, window, stride, padding):
  """Small integers: ties in most windows (ReLU's zeros make them common), where the gradient's rule shows (the first
  maximum in row-major order takes it all); integer cotangents keep the sums exact, so the comparison is exact."""
  rng = np.random.default_rng(size * window + stride)
  x = jnp.asarray(rng.integers(0, 3, (2, size, size, 3)), jnp.float32)
  args = dict(window_shape=(window, window), strides=(stride, stride), padding=padding)
  plain_out = nn.max_pool(x, **args)
  cotangent = jnp.asarray(rng.integers(-3, 4, plain_out.shape), jnp.float32)
  loss = lambda pool: lambda x: jnp.sum(pool(x, **args) * cotangent)
  fast_out = fastpool.max_pool(x, **args)
  np.testing.assert_array_equal(fast_out, plain_out)
  np.testing.assert_array_equal(jax.jit(jax.grad(loss(fastpool.max_pool)))(x), jax.grad(loss(nn.max_pool))(x))


def test_the_pool_gradient_is_rewritten_on_cpu_only(monkeypatch):
  x = jnp.ones((1, 4, 4, 2))
  grad = lambda: str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(fastpool.max_pool(x, (2, 2), (2, 2)))))(x))
  assert "select_and_scatter" not in grad() and "custom_vjp" in grad()
  monkeypatch.setenv("CNN_FLAX_FAST_CONV", "0")
  assert "custom_vjp" not in grad()
