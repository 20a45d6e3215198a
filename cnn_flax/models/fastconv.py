"""Convolutions computed another way where XLA:CPU is slow, with the same parameters and the same results.

`conv_general_dilated` has the signature of `jax.lax.conv_general_dilated` and is given to Flax's `nn.Conv`
(its `conv_general_dilated` field; see `layers.Conv`), so kernels keep their HWIO layout and names: checkpoints,
weight import and parameter counts do not change. On the CPU backend it computes

* every float32 convolution with static shapes on a single device, except a strided 1x1, in oneDNN
  (`onednn.conv`, forward and both gradients), where oneDNN is installed and a C++ compiler is at hand
  (benchmarks/README.md has the figures). Multi-device meshes and shard_map bodies (a custom call has no sharding
  rule), batch-polymorphic exports (no static shape; and an exported module must not name a handler only this
  process has) and bfloat16 take the paths below;

and otherwise (without oneDNN, or outside those cases)

* a 1x1 convolution (any stride, one group) as a strided slice then one matrix product over the channel axis:
  XLA:CPU sends such convolutions through its generic convolution path, several times slower than a dot;
* a depthwise convolution (one group per input channel, depth multiplier 1) as k*k shifted multiply-adds:
  XLA:CPU's grouped convolution runs one small convolution per channel;
* the kernel gradient of a convolution whose output gradient is large (12 MiB or more, any stride) as one matrix
  product of the input's patches with the output gradient (a custom VJP; the forward pass and the input gradient
  stay XLA's): XLA:CPU's backward-filter convolution takes 2-16x longer there (9.5 s against 0.6 s for one 224 px,
  64-channel layer of VGG at batch 16; 638 against 166 ms for ResNet's 7x7/2 stem at 224 px, batch 16);
* a convolution whose output map is small (at most 16 positions: 4x4, 2x2, 1x1) as one matrix product of the
  input's patches with the kernel: XLA:CPU's convolution is pathological on such maps with many channels (a 3x3,
  512->1024 convolution on a 2x2 map at batch 32: 1.8 s forward against 19 ms as a product), and they are where
  ImageNet-shaped networks end at the study's 32 px (VGG's last block, ResNet-50's last stage, MobileNet's tail).

Everything else, and every other backend (cuDNN and the TPU handle these shapes well), goes to
`lax.conv_general_dilated` unchanged. `CNN_FLAX_FAST_CONV=0` turns the rewrites off, `fastpool`'s too (for
comparisons). The rewrites are tested against the plain computation, outputs and gradients
(tests/models/test_fastconv.py).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os

import jax
import jax.numpy as jnp
from jax import lax

from cnn_flax.models import onednn

_CHANNELS_LAST = ("NHWC", "HWIO", "NHWC")


_switched_off = [False]
# Where the kernel gradient as one matrix product beats XLA:CPU's backward-filter convolution: measured per layer
# shape (`python benchmarks/conv_shapes.py --kernel_gradient`, benchmarks/README.md), what decides is the size of
# the output gradient, whatever the kernel, stride or channel counts. From about 12 MiB XLA's time grows several
# times faster than the arithmetic (VGG's 32 px 64->64 layer at batch 64, 16 MiB: 812 ms against 206 as a product;
# ResNet's 7x7/2 stem at 224 px, batch 16: 926 against 212); between 8 and 12 MiB either may win from run to run;
# below, XLA is faster (ResNet-50's 28 px 128->128 at batch 16, 6 MiB: 56 against 92; DenseNet's 32-map layers and
# ResNet-20's: 3-4x).
_PRODUCT_MIN_GRADIENT_BYTES = 12 * 2**20
# Output maps up to 4x4 go through patches and one product (forward and both gradients, by autodiff): 1.2-100x
# faster on 4x4-1x1 maps; at 7x7 the two are even (ResNet-50's last stage at 224 px stays XLA's).
_SMALL_MAP_MAX_POSITIONS = 16


def kernel_gradient_as_product(gradient_shape, itemsize: int) -> bool:
  """The size rule above, for an output gradient of `gradient_shape` (any factoring of its size)."""
  # A symbolic batch (a batch-polymorphic export, forward only) has no size to judge: XLA's convolution.
  return (all(isinstance(d, int) for d in gradient_shape)
          and math.prod(gradient_shape) * itemsize >= _PRODUCT_MIN_GRADIENT_BYTES)


def enabled() -> bool:
  """Whether the rewrites apply: CPU backend, not switched off by CNN_FLAX_FAST_CONV=0 or `plain()`."""
  return (not _switched_off[0] and os.environ.get("CNN_FLAX_FAST_CONV", "1") != "0"
          and jax.default_backend() == "cpu")


@contextlib.contextmanager
def plain():
  """Traces inside use lax.conv_general_dilated only (the layer summary reads convolutions off the graph)."""
  saved, _switched_off[0] = _switched_off[0], True
  try:
    yield
  finally:
    _switched_off[0] = saved


def _is_channels_last(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  return tuple(dimension_numbers) == _CHANNELS_LAST


def explicit_padding(padding, in_shape, kernel, strides) -> tuple[tuple[int, int], ...]:
  """Padding as (low, high) pairs per spatial axis, a string ('SAME', 'VALID') resolved as lax resolves it."""
  if not isinstance(padding, str):
    return tuple(tuple(p) for p in padding)
  return tuple(lax.padtype_to_pads(in_shape, kernel, strides, padding))


def _pointwise(lhs, rhs, strides, pads, precision):
  """1x1: pad (rarely non-zero), subsample by the stride, multiply over channels."""
  if any(p != (0, 0) for p in pads):
    lhs = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
  if strides != (1, 1):
    lhs = lhs[:, ::strides[0], ::strides[1], :]
  return jnp.einsum("nhwc,co->nhwo", lhs, rhs[0, 0], precision=precision)


def windows(padded, kh: int, kw: int, strides) -> list:
  """The k*k shifted, strided views of a padded NHWC input, tap (i, j) in row-major order: window (i, j) holds the
  input pixel that tap (i, j) of the kernel meets at every output position."""
  batch, height, width, channels = padded.shape
  out_h = (height - kh) // strides[0] + 1
  out_w = (width - kw) // strides[1] + 1
  return [lax.slice(padded, (0, i, j, 0), (batch, i + (out_h - 1) * strides[0] + 1,
                                           j + (out_w - 1) * strides[1] + 1, channels), (1, *strides, 1))
          for i in range(kh) for j in range(kw)]


def _depthwise(lhs, rhs, strides, pads, precision):
  """k x k depthwise: the sum over taps (i, j) of the shifted, strided input times that tap's per-channel weight."""
  del precision  # elementwise products: no precision choice to make
  kh, kw = rhs.shape[:2]
  views = windows(jnp.pad(lhs, ((0, 0), *pads, (0, 0))), kh, kw, strides)
  taps = rhs[:, :, 0].reshape(kh * kw, -1)  # (k*k, C), in the windows' order
  out = views[0] * taps[0]
  for window, tap in zip(views[1:], taps[1:], strict=True):
    out = out + window * tap
  return out


def _small_map(lhs, rhs, strides, pads, precision):
  """A convolution with few output positions: the k*k shifted, strided windows side by side (patches), then one
  matrix product with the kernel flattened in the same (i, j, c_in) order."""
  kh, kw, cin, cout = rhs.shape
  views = windows(jnp.pad(lhs, ((0, 0), *pads, (0, 0))), kh, kw, strides)
  return jnp.einsum("nhwk,ko->nhwo", jnp.concatenate(views, axis=-1), rhs.reshape(kh * kw * cin, cout),
                    precision=precision)


def _output_positions(in_hw, kernel, strides, pads) -> int:
  positions = 1
  for size, k, stride, (low, high) in zip(in_hw, kernel, strides, pads, strict=True):
    positions *= max(0, (size + low + high - k) // stride + 1)
  return positions


def _chunks(batch: int, patch_bytes: int, budget: int = 256 * 2**20) -> int:
  """The fewest slices of the batch (a divisor of it) whose patches fit in `budget` bytes each."""
  for count in range(1, batch + 1):
    if batch % count == 0 and patch_bytes / count <= budget:
      return count
  return batch


def _patches_kernel_gradient(padded, dy, kh: int, kw: int, strides):
  """A convolution's kernel gradient as one matrix product, (k*k*C_in, N*H*W) x (N*H*W, C_out), of the padded
  input's patches with the output gradient; returned as (k*k*C_in, C_out), rows in the kernel's (i, j, c_in) order."""
  patches = jnp.concatenate(windows(padded, kh, kw, strides), axis=-1)
  return patches.reshape(-1, patches.shape[-1]).T @ dy.reshape(-1, dy.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _product_kernel_gradient(lhs, rhs, strides, pads):
  return lax.conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=_CHANNELS_LAST)


def _product_kernel_gradient_fwd(lhs, rhs, strides, pads):
  return _product_kernel_gradient(lhs, rhs, strides, pads), (lhs, rhs)


def _product_kernel_gradient_bwd(strides, pads, residuals, dy):
  """XLA's own input gradient (a convolution, fast on CPU); the kernel gradient as one matrix product of the
  input's patches with the output gradient, where XLA:CPU's backward-filter convolution is several times slower."""
  lhs, rhs = residuals
  kh, kw, cin, cout = rhs.shape
  dx = jax.vjp(lambda x: lax.conv_general_dilated(x, rhs, strides, pads, dimension_numbers=_CHANNELS_LAST), lhs)[1](
      dy)[0]
  padded = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
  n, h, w, _ = dy.shape

  kernel_gradient = functools.partial(_patches_kernel_gradient, kh=kh, kw=kw, strides=strides)
  # The patches are k*k times the output map: over ~256 MiB they are made a slice of the batch at a time (a scan
  # keeps one slice alive), so the gradient costs a bounded amount of memory at any batch size.
  chunks = _chunks(n, n * h * w * kh * kw * cin * lhs.dtype.itemsize)
  if chunks == 1:
    dw = kernel_gradient(padded, dy)
  else:
    split = lambda a: a.reshape(chunks, n // chunks, *a.shape[1:])
    dw = jax.lax.scan(lambda acc, xs: (acc + kernel_gradient(*xs), None),
                      jnp.zeros((kh * kw * cin, cout), dy.dtype), (split(padded), split(dy)))[0]
  dw = dw.reshape(kh, kw, cin, cout)
  return dx, dw.astype(rhs.dtype)


_product_kernel_gradient.defvjp(_product_kernel_gradient_fwd, _product_kernel_gradient_bwd)


def _in_onednn(lhs, rhs, pads) -> bool:
  """Whether oneDNN computes this convolution: float32 (which XLA:CPU computes in full whatever `precision`
  asks, as oneDNN does), static shapes, one device and not inside shard_map, padding not negative."""
  return (lhs.dtype == rhs.dtype == jnp.float32 and all(p >= 0 for pair in pads for p in pair)
          and onednn.applies(lhs, rhs))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated`, with the CPU rewrites above where they apply (same arguments, same result)."""
  plain = lambda: lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type)
  undilated = all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1)))
  if (not enabled() or lhs.ndim != 4 or not _is_channels_last(dimension_numbers) or not undilated
      or batch_group_count != 1 or preferred_element_type is not None):
    return plain()
  kh, kw, in_per_group, out_channels = rhs.shape
  strides = tuple(window_strides)
  pads = explicit_padding(padding, lhs.shape[1:3], (kh, kw), strides)
  # A strided 1x1 (ResNet's projections) stays a slice and a product: 0.58x in oneDNN (conv_shapes.py --onednn).
  strided_pointwise = (kh, kw) == (1, 1) and strides != (1, 1) and feature_group_count == 1
  if not strided_pointwise and _in_onednn(lhs, rhs, pads):
    return onednn.conv(lhs, rhs, strides, pads, feature_group_count)
  if (kh, kw) == (1, 1) and feature_group_count == 1:
    return _pointwise(lhs, rhs, strides, pads, precision)
  if feature_group_count == lhs.shape[-1] == out_channels and in_per_group == 1:
    return _depthwise(lhs, rhs, strides, pads, precision)
  out_positions = _output_positions(lhs.shape[1:3], (kh, kw), strides, pads)
  if feature_group_count == 1 and out_positions <= _SMALL_MAP_MAX_POSITIONS:
    return _small_map(lhs, rhs, strides, pads, precision)
  if (feature_group_count == 1 and precision is None
      and kernel_gradient_as_product((lhs.shape[0], out_positions, out_channels), lhs.dtype.itemsize)):
    return _product_kernel_gradient(lhs, rhs, strides, pads)
  return plain()
