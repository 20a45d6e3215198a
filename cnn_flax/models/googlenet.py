"""GoogLeNet / Inception v1, two readings.

* ``googlenet``: Szegedy et al. 2014/2015, "Going deeper with convolutions" (Table 1, Figs. 2b and 3): convs with
  biases and ReLU, no BatchNorm, true 5x5 convolutions in the third branch, max-pool 3x3/2 (Caffe's ceil rounding:
  112 -> 56 -> ... -> 7), LRN after the first max-pool and after conv2 (Fig. 3), average pool 7x7, dropout 0.4,
  linear classifier. 6,998,552 parameters for 1000 classes; 13,378,280 with both auxiliary heads.
  The paper gives no LRN hyper-parameters; those of the authors' Caffe model (bvlc_googlenet) are used: size 5,
  alpha 1e-4 divided by the size (Caffe's convention), beta 0.75, k 1. Initialisation also follows bvlc_googlenet
  (Caffe "xavier" = LeCun uniform, conv biases 0.2).
* ``googlenet_bn``: torchvision's ``googlenet``: BatchNorm (``bn_epsilon`` 1e-3, as torchvision) after every bias-free
  conv, no LRN, a 3x3 conv where the paper has the 5x5 (a known slip kept for compatibility with its weights),
  max-pool 2x2/2 before 5a, aux heads that pool adaptively to 4x4. 6,624,904 parameters; 13,004,888 with aux.
  Stated deviation: the main head's dropout is the paper's 0.4, not torchvision's 0.2 (``dropout_rate=0.2``
  restores it). Initialisation N(0, 0.01) for convs and dense layers (torchvision's trunc_normal_ with bounds +-2
  at std 0.01 is effectively untruncated).

Auxiliary heads (on 4a and 4d, sec. 5): average pool 5x5/3 (14x14 -> 4x4), 1x1 conv 128 + ReLU, FC 1024 + ReLU,
dropout 0.7, linear classifier. They exist only in training: with ``train=True`` and ``aux_logits=True`` (the
default) the model returns ``{"logits": main, "aux_logits": (aux_4a, aux_4d)}`` (the paper weights their losses by
0.3), otherwise plain logits. Consequently ``init(..., train=True)`` creates the aux parameters and
``init(..., train=False)`` does not; variables from a training init work at inference (unused ones are ignored).
To accept other resolutions, the paper's 5x5/3 pool is followed by an adaptive average pool to 4x4 (an identity at
224 px, where 14x14 -> 4x4 already; maps under 5x5 get only the adaptive pool); global average pooling replaces the
final 7x7 one. ``googlenet_bn`` pools its aux inputs adaptively only, as torchvision does.

``se_ratio`` (None = off) adds a squeeze-and-excitation block on each Inception module's concatenated output: an
ablation, not part of either reference.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnn_flax.models import registry
from cnn_flax.models.layers import ConvBN, LocalResponseNorm, SqueezeExcite, adaptive_avg_pool, max_pool, maybe_remat

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def max_pool_ceil(x, window: int, stride: int):
  """Max pooling without padding but with ceil rounding of the output size (Caffe; PyTorch ``ceil_mode=True``).

  The extra bottom/right padding is -inf (the padding value of ``nn.max_pool`` and ``max_pool``), so it never wins
  the max.
  """
  pads = []
  for n in x.shape[1:3]:
    out = max(1, -(-(n - window) // stride) + 1)
    pads.append((0, max(0, (out - 1) * stride + window - n)))
  return max_pool(x, (window, window), strides=(stride, stride), padding=pads)


class _Conv(nn.Module):
  """The conv unit of either reading: conv+bias+ReLU (paper) or conv+BN+ReLU (torchvision)."""
  features: int
  kernel_size: int = 1
  strides: int = 1
  batch_norm: bool = False
  bn_epsilon: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if self.batch_norm:
      init = dict(kernel_init=nn.initializers.normal(0.01))
    else:
      init = dict(kernel_init=nn.initializers.lecun_uniform(), bias_init=nn.initializers.constant(0.2))
    return ConvBN(self.features, (self.kernel_size, self.kernel_size), strides=(self.strides, self.strides),
                  use_bn=self.batch_norm, use_bias=not self.batch_norm, epsilon=self.bn_epsilon,
                  dtype=self.dtype, name="unit", **init)(x, train)


class Inception(nn.Module):
  """Fig. 2(b): four parallel branches concatenated along channels.

  1x1 | 1x1 reduce -> 3x3 | 1x1 reduce -> 5x5 (or 3x3) | 3x3/1 max-pool -> 1x1 projection.
  With ``reductions=False`` it is the naive module of Fig. 2(a): 1x1 | 3x3 | 5x5 on the input itself, and the
  max-pool passed through unprojected, so the module's output has c1 + c3 + c5 + C_in channels: the input's width is
  carried to every later module, the "computational blow up" the 1x1 reductions exist to prevent.
  """
  widths: tuple[int, int, int, int, int, int]
  reductions: bool = True
  branch3_kernel: int = 5
  batch_norm: bool = False
  bn_epsilon: float = 1e-3
  se_ratio: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    c1, c3r, c3, c5r, c5, cp = self.widths
    conv = functools.partial(_Conv, batch_norm=self.batch_norm, bn_epsilon=self.bn_epsilon, dtype=self.dtype)
    reduce = (lambda c, name: conv(c, name=name)(x, train)) if self.reductions else (lambda c, name: x)
    b1 = conv(c1, name="branch1")(x, train)
    b2 = conv(c3, 3, name="branch2")(reduce(c3r, "branch2_reduce"), train)
    b3 = conv(c5, self.branch3_kernel, name="branch3")(reduce(c5r, "branch3_reduce"), train)
    b4 = max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    if self.reductions:
      b4 = conv(cp, name="branch4_proj")(b4, train)
    y = jnp.concatenate([b1, b2, b3, b4], axis=-1)
    if self.se_ratio is not None:
      y = SqueezeExcite(self.se_ratio, dtype=self.dtype, name="se")(y)
    return y


class InceptionAux(nn.Module):
  """Auxiliary classifier (sec. 5)."""
  num_classes: int
  batch_norm: bool = False
  paper_pool: bool = True  # paper: avg-pool 5x5/3; torchvision: adaptive avg-pool to 4x4 only
  dropout_rate: float = 0.7
  bn_epsilon: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if self.paper_pool and min(x.shape[1:3]) >= 5:
      x = nn.avg_pool(x, (5, 5), strides=(3, 3), padding="VALID")  # 14x14 -> 4x4
    x = adaptive_avg_pool(x, 4)  # identity after the paper's pool at 224 px
    x = _Conv(128, batch_norm=self.batch_norm, bn_epsilon=self.bn_epsilon, dtype=self.dtype,
              name="conv")(x, train)
    x = x.reshape((x.shape[0], -1))
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              kernel_init=nn.initializers.normal(0.01) if self.batch_norm
                              else nn.initializers.lecun_uniform())
    x = nn.relu(dense(1024, name="fc1")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes, name="fc2")(x)


class GoogLeNet(nn.Module):
  """GoogLeNet; the defaults are the paper's reading (see the module docstring)."""
  num_classes: int = 1000
  batch_norm: bool = False
  branch3_kernel: int = 5  # the "5x5" branch: 5 in the paper, 3 in torchvision
  lrn: bool = True
  pool4_window: int = 3  # max-pool before 5a: 3x3/2 in the paper, 2x2/2 in torchvision
  aux_logits: bool = True
  aux_paper_pool: bool = True
  dropout_rate: float = 0.4
  aux_dropout_rate: float = 0.7
  bn_epsilon: float = 1e-3  # torchvision's GoogLeNet (its other models use 1e-5); used with batch_norm=True only
  se_ratio: int | None = None
  inception_reductions: bool = True  # False: the naive modules of Fig. 2(a), an ablation (see `Inception`)
  remat: bool = False  # recompute each Inception module's activations in the backward pass (config.remat)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(_Conv, batch_norm=self.batch_norm, bn_epsilon=self.bn_epsilon, dtype=self.dtype)
    inception = functools.partial(maybe_remat(Inception, self.remat), branch3_kernel=self.branch3_kernel,
                                  batch_norm=self.batch_norm, bn_epsilon=self.bn_epsilon, se_ratio=self.se_ratio,
                                  reductions=self.inception_reductions, dtype=self.dtype)
    aux = functools.partial(InceptionAux, self.num_classes, batch_norm=self.batch_norm,
                            paper_pool=self.aux_paper_pool, dropout_rate=self.aux_dropout_rate,
                            bn_epsilon=self.bn_epsilon, dtype=self.dtype)
    # Caffe's LRN: alpha divided by the window size, k = 1.
    lrn = functools.partial(LocalResponseNorm, size=5, alpha=1e-4, beta=0.75, k=1.0, alpha_over_size=True,
                            dtype=self.dtype)
    with_aux = train and self.aux_logits

    x = conv(64, 7, strides=2, name="conv1")(x, train)  # 224 -> 112
    x = max_pool_ceil(x, 3, 2)  # -> 56
    if self.lrn:
      x = lrn(name="lrn1")(x)
    x = conv(64, 1, name="conv2_reduce")(x, train)
    x = conv(192, 3, name="conv2")(x, train)
    if self.lrn:
      x = lrn(name="lrn2")(x)
    x = max_pool_ceil(x, 3, 2)  # -> 28
    x = inception(INCEPTION["3a"], name="inception3a")(x, train)
    x = inception(INCEPTION["3b"], name="inception3b")(x, train)
    x = max_pool_ceil(x, 3, 2)  # -> 14
    x = inception(INCEPTION["4a"], name="inception4a")(x, train)
    aux1 = aux(name="aux1")(x, train) if with_aux else None
    x = inception(INCEPTION["4b"], name="inception4b")(x, train)
    x = inception(INCEPTION["4c"], name="inception4c")(x, train)
    x = inception(INCEPTION["4d"], name="inception4d")(x, train)
    aux2 = aux(name="aux2")(x, train) if with_aux else None
    x = inception(INCEPTION["4e"], name="inception4e")(x, train)
    x = max_pool_ceil(x, self.pool4_window, 2)  # -> 7
    x = inception(INCEPTION["5a"], name="inception5a")(x, train)
    x = inception(INCEPTION["5b"], name="inception5b")(x, train)
    x = jnp.mean(x, axis=(1, 2))  # the paper's 7x7 average pool, for any resolution
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    init = nn.initializers.normal(0.01) if self.batch_norm else nn.initializers.lecun_uniform()
    logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=init, name="fc")(x)
    if with_aux:
      return {"logits": logits, "aux_logits": (aux1, aux2)}
    return logits


googlenet = GoogLeNet
googlenet_bn = functools.partial(GoogLeNet, batch_norm=True, branch3_kernel=3, lrn=False, pool4_window=2,
                                 aux_paper_pool=False)

# torchvision counts the stem's 1x1 reduce as conv2 and the 3x3 as conv3; an Inception module's branches are
# Sequentials (reduce at .0, conv at .1; branch4.0 is the max-pool); the aux heads' fc1 multiplies a flattened
# 4x4x128 map, ordered (C, H, W) in torchvision.
TORCHVISION_RULES = [
    (r"conv1/unit/(conv|bn)", r"conv1.\1", None),
    (r"conv2_reduce/unit/(conv|bn)", r"conv2.\1", None),
    (r"conv2/unit/(conv|bn)", r"conv3.\1", None),
    (r"(inception\w+)/branch1/unit/(conv|bn)", r"\1.branch1.\2", None),
    (r"(inception\w+)/branch([23])_reduce/unit/(conv|bn)", r"\1.branch\2.0.\3", None),
    (r"(inception\w+)/branch([23])/unit/(conv|bn)", r"\1.branch\2.1.\3", None),
    (r"(inception\w+)/branch4_proj/unit/(conv|bn)", r"\1.branch4.1.\2", None),
    (r"(aux[12])/conv/unit/(conv|bn)", r"\1.conv.\2", None),
    (r"(aux[12])/fc1", r"\1.fc1", ("chw", 128, 4, 4)),
    (r"(aux[12])/fc2", r"\1.fc2", None),
    (r"fc", "fc", None),
]

registry.register("googlenet", googlenet, input_size=224,
                  reference="Szegedy et al. 2014 (5x5 branches, conv biases, LRN as bvlc_googlenet), aux heads")
registry.register("googlenet_bn", googlenet_bn, input_size=224,
                  reference="torchvision googlenet (BatchNorm, 3x3 in the 5x5 branch), head dropout 0.4",
                  torchvision_rules=TORCHVISION_RULES)
