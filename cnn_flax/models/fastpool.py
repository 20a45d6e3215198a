"""Max pooling whose gradient XLA:CPU computes slowly, computed another way, with the same results.

`max_pool` takes Flax's `nn.max_pool` arguments and computes the same forward pass (the same `lax.reduce_window`).
On the CPU backend its gradient is a custom VJP: for each window position in row-major order, the strided view of
the input that equals the output and has not yet been claimed by an earlier position receives the output gradient,
which is padded back to the input's place. That is the rule of XLA's own gradient (`select_and_scatter` with
``>=``: the first maximum of a window takes the whole gradient, ties included), so the results are the same up to
the order in which overlapping windows' contributions are summed. XLA:CPU's `select_and_scatter` runs 2.5-35x
slower than this (`python benchmarks/conv_shapes.py --pool`, forward and backward): 68 ms against 3.5 for VGG's
first 2x2 pool at 32 px, batch 64; 289 against 110 for ResNet's 3x3/2 stem pool at 224 px, batch 16; 382 against 63
for a GoogLeNet 3x3/1 branch pool at 24 px, batch 64.

Other backends, and `CNN_FLAX_FAST_CONV=0` (the switch for all of the CPU fast paths, see `fastconv`), use
`nn.max_pool` unchanged. Tested against it, outputs and gradients (tests/models/test_fastconv.py).
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cnn_flax.models import fastconv


def max_pool(x, window_shape: Sequence[int], strides: Sequence[int] | None = None, padding="VALID"):
  """`nn.max_pool(x, window_shape, strides, padding)` for NHWC inputs, with the CPU gradient above."""
  strides = tuple(strides) if strides is not None else (1,) * len(window_shape)
  if not fastconv.enabled() or x.ndim != 4 or len(window_shape) != 2:
    return nn.max_pool(x, tuple(window_shape), strides=strides, padding=padding)
  pads = fastconv.explicit_padding(padding, x.shape[1:3], tuple(window_shape), strides)
  return _max_pool(x, tuple(window_shape), strides, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))


def _max_pool_fwd(x, window, strides, pads):
  y = _max_pool(x, window, strides, pads)
  return y, (x, y)


def _max_pool_bwd(window, strides, pads, residuals, dy):
  x, y = residuals
  (top, bottom), (left, right) = pads
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-jnp.inf)
  height, width = padded.shape[1:3]
  out_h, out_w = y.shape[1:3]
  zero = jnp.zeros((), dy.dtype)
  claimed = jnp.zeros(y.shape, bool)
  dx = jnp.zeros(padded.shape, dy.dtype)
  positions = [(i, j) for i in range(window[0]) for j in range(window[1])]  # the order of `windows`
  for (i, j), view in zip(positions, fastconv.windows(padded, *window, strides), strict=True):
    first = (view == y) & ~claimed  # the window's first maximum in row-major order, as XLA's `>=` selects
    claimed = claimed | first
    # Back to the input's place: offset (i, j), stride - 1 zeros between neighbours (lax.slice's transpose).
    dx = dx + lax.pad(jnp.where(first, dy, zero), zero,
                      ((0, 0, 0), (i, height - i - (out_h - 1) * strides[0] - 1, strides[0] - 1),
                       (j, width - j - (out_w - 1) * strides[1] - 1, strides[1] - 1), (0, 0, 0)))
  return (dx[:, top:top + x.shape[1], left:left + x.shape[2], :],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
