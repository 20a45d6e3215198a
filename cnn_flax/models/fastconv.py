"""Convolutions computed another way where XLA:CPU is slow, with the same parameters and the same results.

`conv_general_dilated` has the signature of `jax.lax.conv_general_dilated` and is given to Flax's `nn.Conv`
(its `conv_general_dilated` field; see `layers.Conv`), so kernels keep their HWIO layout and names: checkpoints,
weight import and parameter counts do not change. On the CPU backend it computes

* a 1x1 convolution (any stride, one group) as a strided slice then one matrix product over the channel axis:
  XLA:CPU sends such convolutions through its generic convolution path, several times slower than a dot;
* a depthwise convolution (one group per input channel, depth multiplier 1) as k*k shifted multiply-adds:
  XLA:CPU's grouped convolution runs one small convolution per channel.

Everything else, and every other backend (cuDNN and the TPU handle these shapes well), goes to
`lax.conv_general_dilated` unchanged. `CNN_FLAX_FAST_CONV=0` turns the rewrites off (for comparisons). The
rewrites are tested against the plain computation, outputs and gradients (tests/models/test_fastconv.py).
"""
from __future__ import annotations

import contextlib
import os

import jax
import jax.numpy as jnp
from jax import lax

_CHANNELS_LAST = ("NHWC", "HWIO", "NHWC")


_switched_off = [False]


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


def _explicit_padding(padding, in_shape, kernel, strides) -> list[tuple[int, int]]:
  if not isinstance(padding, str):
    return [tuple(p) for p in padding]
  return list(lax.padtype_to_pads(in_shape, kernel, strides, padding))


def _pointwise(lhs, rhs, strides, pads, precision):
  """1x1: pad (rarely non-zero), subsample by the stride, multiply over channels."""
  if any(p != (0, 0) for p in pads):
    lhs = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
  if strides != (1, 1):
    lhs = lhs[:, ::strides[0], ::strides[1], :]
  return jnp.einsum("nhwc,co->nhwo", lhs, rhs[0, 0], precision=precision)


def _depthwise(lhs, rhs, strides, pads, precision):
  """k x k depthwise: the sum over taps (i, j) of the shifted, strided input times that tap's per-channel weight."""
  del precision  # elementwise products: no precision choice to make
  kh, kw, _, channels = rhs.shape
  lhs = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
  _, height, width, _ = lhs.shape
  out_h = (height - kh) // strides[0] + 1
  out_w = (width - kw) // strides[1] + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      window = lax.slice(lhs, (0, i, j, 0), (lhs.shape[0], i + (out_h - 1) * strides[0] + 1,
                                             j + (out_w - 1) * strides[1] + 1, channels), (1, *strides, 1))
      term = window * rhs[i, j, 0]
      out = term if out is None else out + term
  return out


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
  pads = _explicit_padding(padding, lhs.shape[1:3], (kh, kw), strides)
  if (kh, kw) == (1, 1) and feature_group_count == 1:
    return _pointwise(lhs, rhs, strides, pads, precision)
  if feature_group_count == lhs.shape[-1] == out_channels and in_per_group == 1:
    return _depthwise(lhs, rhs, strides, pads, precision)
  return plain()
