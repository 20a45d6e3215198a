"""Layers shared by several model families.

* ``LocalResponseNorm``: AlexNet's local response normalisation across channels (Krizhevsky et al. 2012, sec. 3.3).
* ``Conv``: Flax's ``nn.Conv`` (same parameters, names and results) computed by ``fastconv`` where XLA:CPU is
  slow; every model builds its convolutions with it.
* ``max_pool``: Flax's ``nn.max_pool`` (same results) with a faster gradient on XLA:CPU (``fastpool``).
* ``ConvBN``: convolution, optional BatchNorm, optional activation: the unit most modern CNNs are built from.
* ``DepthwiseSeparable``: MobileNet v1's block (Howard et al. 2017, Fig. 3).
* ``SqueezeExcite``: the SE block (Hu et al. 2018), available to any family through a ``se_ratio`` field.
* ``adaptive_avg_pool``: PyTorch's ``adaptive_avg_pool2d`` (same bins), so that torchvision-style heads accept any
  input resolution.

Conventions: NHWC; ``dtype`` is the compute dtype, parameters stay float32 (Flax's default ``param_dtype``);
BatchNorm uses Flax momentum 0.9 (= PyTorch momentum 0.1) and epsilon 1e-5 (torchvision) unless told otherwise.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.models import fastconv
from cnn_flax.models.batchnorm import BatchNorm
from cnn_flax.models.fastpool import max_pool  # noqa: F401  (the models take their max pooling from here)

# A partial of nn.Conv, not a subclass: modules keep the class name Conv, so parameter paths do not change.
Conv = functools.partial(nn.Conv, conv_general_dilated=fastconv.conv_general_dilated)


def maybe_remat(block: type[nn.Module], remat: bool) -> type[nn.Module]:
  """`block` rematerialised (its activations recomputed in the backward pass instead of kept) when `remat`.

  For blocks called as ``block(x, train)``: ``train`` is static. Blocks are named explicitly where they are
  created, so the parameter tree is the same with and without rematerialisation.
  """
  return nn.remat(block, static_argnums=(2,)) if remat else block


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def symmetric_padding(kernel_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """PyTorch-style padding ``k // 2`` on both sides (odd kernels), whatever the stride.

  Flax's ``'SAME'`` pads stride-2 layers asymmetrically ((0, 1) on even inputs) while torchvision pads (1, 1);
  both give the same output shape but different sampling positions, which matters when importing torchvision
  weights. Even kernels (rare) get (k-1)//2 before and k//2 after.
  """
  return tuple(((k - 1) // 2, k // 2) for k in kernel_size)


class LocalResponseNorm(nn.Module):
  """Local response normalisation across channels, Krizhevsky et al. 2012, eq. in sec. 3.3:

      b[c] = a[c] / (k + alpha * sum_{j = c - size//2}^{c + size//2} a[j]^2) ** beta

  (the window is clipped at the first and last channel). Defaults are the paper's: size 5, alpha 1e-4, beta 0.75,
  k 2. By default alpha multiplies the plain *sum* of squares, as in the paper. PyTorch's ``nn.LocalResponseNorm``
  and Caffe's LRN layer divide alpha by ``size`` (they average the squares); set ``alpha_over_size=True`` to get
  that convention (used by GoogLeNet, whose only reference implementation is Caffe's).

  The sum of squares is accumulated in float32 whatever ``dtype`` is (squares of activations overflow or lose
  precision quickly in half precision); the result is returned in ``dtype``.
  """
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 2.0
  alpha_over_size: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x32 = jnp.asarray(x, jnp.float32)
    half = self.size // 2
    # Sliding sum over the channel axis; zero padding = clipping the window at the edges.
    window_sum = jax.lax.reduce_window(
        jnp.square(x32), 0.0, jax.lax.add,
        window_dimensions=(1,) * (x.ndim - 1) + (self.size,),
        window_strides=(1,) * x.ndim,
        padding=((0, 0),) * (x.ndim - 1) + ((half, self.size - 1 - half),))
    alpha = self.alpha / self.size if self.alpha_over_size else self.alpha
    y = x32 * jnp.power(self.k + alpha * window_sum, -self.beta)
    return y.astype(self.dtype)


class ConvBN(nn.Module):
  """Conv -> (BatchNorm) -> (activation).

  ``padding`` defaults to PyTorch-style symmetric ``k // 2`` padding (see ``symmetric_padding``); any Flax padding
  ('SAME', 'VALID', explicit pairs) is accepted. With BatchNorm the conv has no bias by default (BN's own bias
  makes it redundant); without BatchNorm pass ``use_bias=True``. ``groups`` is ``feature_group_count``
  (``groups == in_channels`` gives a depthwise conv). ``momentum``/``epsilon`` are BatchNorm's.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: Any = None  # None: symmetric k // 2
  use_bn: bool = True
  use_bias: bool = False
  act: Callable | None = nn.relu
  groups: int = 1
  dtype: Any = jnp.float32
  momentum: float = 0.9
  epsilon: float = 1e-5
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  scale_init: Callable = nn.initializers.ones  # BN scale; zeros gives a zero-initialised residual branch

  @nn.compact
  def __call__(self, x, train: bool):
    kernel_size = _pair(self.kernel_size)
    padding = symmetric_padding(kernel_size) if self.padding is None else self.padding
    x = Conv(self.features, kernel_size, strides=_pair(self.strides), padding=padding,
                use_bias=self.use_bias, feature_group_count=self.groups, dtype=self.dtype,
                kernel_init=self.kernel_init, bias_init=self.bias_init, name="conv")(x)
    act = self.act
    if self.use_bn:
      relu = act is nn.relu  # then BatchNorm applies it, in the same pass over memory where oneDNN computes both
      x = BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=self.epsilon,
                    dtype=self.dtype, scale_init=self.scale_init, relu=relu, name="bn")(x)
      act = None if relu else act
    if act is not None:
      x = act(x)
    return x


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018): global average pool -> Dense(C // ratio) -> ReLU -> Dense(C) ->
  sigmoid -> channel-wise scale of the input. Both dense layers have biases, as in the paper's reference model.

  The reduced width is ``max(1, C // ratio)`` so that narrow layers (C < ratio) still work. The squeeze (mean) is
  taken in float32 for accuracy in half precision.
  """
  ratio: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    s = jnp.mean(jnp.asarray(x, jnp.float32), axis=(1, 2), keepdims=True)
    s = nn.relu(nn.Dense(max(1, channels // self.ratio), dtype=self.dtype, name="reduce")(s))
    s = nn.sigmoid(nn.Dense(channels, dtype=self.dtype, name="expand")(s))
    return jnp.asarray(x, self.dtype) * s


class DepthwiseSeparable(nn.Module):
  """MobileNet v1 block (Howard et al. 2017, Fig. 3 right): 3x3 depthwise conv -> BN -> ReLU -> 1x1 pointwise conv
  -> BN -> ReLU.

  ``se_ratio`` (None = off) adds a ``SqueezeExcite`` on the depthwise output, before the pointwise conv (where
  MnasNet / MobileNet v3 put it): an ablation, not part of MobileNet v1. ``act`` is ReLU as in the paper; the
  TensorFlow reference implementations use ReLU6 (pass ``act=nn.relu6``). ``padding`` is the depthwise conv's,
  ``bn_epsilon`` both BatchNorms' epsilon.
  """
  features: int
  strides: Sequence[int] = (1, 1)
  se_ratio: int | None = None
  act: Callable = nn.relu
  padding: Any = None
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    in_channels = x.shape[-1]
    # feature_group_count == in_channels: one 3x3 filter per input channel (depth multiplier 1).
    x = ConvBN(in_channels, (3, 3), strides=self.strides, padding=self.padding, groups=in_channels,
               act=self.act, epsilon=self.bn_epsilon, dtype=self.dtype, name="depthwise")(x, train)
    if self.se_ratio is not None:
      x = SqueezeExcite(self.se_ratio, dtype=self.dtype, name="se")(x)
    return ConvBN(self.features, (1, 1), act=self.act, epsilon=self.bn_epsilon, dtype=self.dtype,
                  name="pointwise")(x, train)


def adaptive_avg_pool(x, output_size: int | Sequence[int]):
  """Average pooling of an NHWC map to ``output_size`` bins with PyTorch's ``adaptive_avg_pool2d`` bins.

  Bin i of an axis of length n covers [floor(i * n / out), ceil((i + 1) * n / out)); bins may overlap and, when the
  map is smaller than the output, repeat (a 1x1 map becomes a constant 7x7 one). Implemented as two small
  averaging matrices (static shapes), which is exact and cheap; identity when the map already has the output size.
  """
  out_h, out_w = _pair(output_size)
  _, h, w, _ = x.shape
  if (h, w) == (out_h, out_w):
    return x

  def bins(n, out):
    m = np.zeros((out, n), np.float32)
    for i in range(out):
      start, end = (i * n) // out, -((-(i + 1) * n) // out)
      m[i, start:end] = 1.0 / (end - start)
    return m

  mh = jnp.asarray(bins(h, out_h), x.dtype)
  mw = jnp.asarray(bins(w, out_w), x.dtype)
  return jnp.einsum("oh,nhwc,pw->nopc", mh, x, mw)
