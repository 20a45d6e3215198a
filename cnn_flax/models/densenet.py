"""Densely connected networks (Huang, Liu, van der Maaten, Weinberger 2017, "Densely connected convolutional
networks").

* ImageNet DenseNets ``densenet121/169/201`` (growth rate k=32, 64-map stem) and ``densenet161`` (k=48, 96-map
  stem) follow ``torchvision.models.densenet``: 7x7 stride-2 stem conv + BN + ReLU + 3x3 stride-2 max-pool, four
  dense blocks of DenseNet-BC layers (BN-ReLU-1x1 conv to 4k maps, BN-ReLU-3x3 conv to k maps), transitions
  BN-ReLU-1x1 conv halving the channels then 2x2 average pooling, a final BN + ReLU, global average pooling and a
  dense classifier. Module names mirror torchvision so imported weights map one to one
  (``features.denseblock1.denselayer1.norm1`` -> ``denseblock1_denselayer1/norm1``, ``transition1/conv``,
  ``norm5``, ``classifier``; the stem ``conv0``/``norm0`` -> ``stem/conv``, ``stem/bn``, a ``layers.ConvBN``).
  The stem conv and max-pool use explicit symmetric (PyTorch) padding, because Flax's ``'SAME'`` pads (0, 1) on
  stride-2 layers.
* CIFAR DenseNets follow section 3 and 4.1 of the paper: three dense blocks at 32, 16 and 8 pixels with a single
  3x3 stem conv (no BN, ReLU or pooling after it: each dense layer starts with its own BN-ReLU).
  ``densenet_bc_100`` is DenseNet-BC (L=100, k=12: 16 bottleneck layers per block, compression 0.5, 2k=24-map
  stem); ``densenet40`` is the basic DenseNet (L=40, k=12: 12 layers of BN-ReLU-3x3 conv per block, no
  compression, 16-map stem).

Every conv is bias-free, as in torchvision and the authors' Torch code. Growth rate, block sizes, compression,
bottleneck and dropout are fields; ``se_ratio`` optionally gates each dense layer's new feature maps with
squeeze-and-excitation before they are concatenated (an ablation, not part of either reference).
Initialisation follows torchvision: He-normal convs (fan-in), BN scale 1 / bias 0, zero classifier bias.
``remat=True`` gives the memory-efficient variant (Pleiss et al. 2017): each layer recomputes its normalised
concatenated input in the backward pass instead of keeping it.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnn_flax.models import registry
from cnn_flax.models.batchnorm import BatchNorm
from cnn_flax.models.layers import Conv, ConvBN, SqueezeExcite, max_pool, maybe_remat, symmetric_padding

# Flax's momentum is the weight of the old running average: 0.9 here is PyTorch's momentum=0.1.
BN_MOMENTUM = 0.9

# torchvision: nn.init.kaiming_normal_(conv.weight) (fan-in, gain sqrt(2), untruncated normal).
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _conv(features: int, kernel_size: int, strides: int = 1, *, name: str, dtype: Any) -> Conv:
  return Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding=symmetric_padding((kernel_size, kernel_size)), use_bias=False, kernel_init=conv_kernel_init,
                 dtype=dtype, name=name)


def _bn_relu(train: bool, *, epsilon: float, name: str, dtype: Any) -> BatchNorm:
  """BatchNorm then ReLU, the pre-activation that opens every DenseNet layer (one pass in oneDNN on a CPU)."""
  return BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=epsilon, dtype=dtype, relu=True,
                   name=name)


class DenseLayer(nn.Module):
  """One composite function H_l: returns only the ``growth_rate`` new maps; the caller concatenates them.

  Pre-activation order (BN-ReLU-Conv) throughout: the input is the raw concatenation of earlier layers' conv
  outputs, so each layer normalises it with its own statistics.
  """
  growth_rate: int
  bottleneck: bool = True  # DenseNet-B: a 1x1 conv to bn_size * k maps before the 3x3
  bn_size: int = 4
  drop_rate: float = 0.0
  se_ratio: int | None = None
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if isinstance(x, (tuple, list)):  # the block's maps so far, concatenated here (see DenseNet.remat)
      x = jnp.concatenate(x, axis=-1)
    y = _bn_relu(train, epsilon=self.bn_epsilon, name="norm1", dtype=self.dtype)(x)
    if self.bottleneck:
      y = _conv(self.bn_size * self.growth_rate, 1, name="conv1", dtype=self.dtype)(y)
      y = _bn_relu(train, epsilon=self.bn_epsilon, name="norm2", dtype=self.dtype)(y)
      y = _conv(self.growth_rate, 3, name="conv2", dtype=self.dtype)(y)
    else:
      y = _conv(self.growth_rate, 3, name="conv1", dtype=self.dtype)(y)
    if self.drop_rate > 0:
      # On the new maps, as torchvision (the paper uses 0.2 only without data augmentation); needs a 'dropout'
      # rng when training.
      y = nn.Dropout(self.drop_rate, deterministic=not train)(y)
    if self.se_ratio is not None:
      y = SqueezeExcite(self.se_ratio, dtype=self.dtype, name="se")(y)
    return y


class Transition(nn.Module):
  """BN-ReLU-1x1 conv to ``features`` maps, then 2x2 average pooling with stride 2."""
  features: int
  drop_rate: float = 0.0
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = _bn_relu(train, epsilon=self.bn_epsilon, name="norm", dtype=self.dtype)(x)
    y = _conv(self.features, 1, name="conv", dtype=self.dtype)(y)
    if self.drop_rate > 0:
      # The authors' Torch code drops after every conv, transitions included (C10/C100 without augmentation).
      y = nn.Dropout(self.drop_rate, deterministic=not train)(y)
    return nn.avg_pool(y, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
  """DenseNet with an ImageNet (``stem="imagenet"``) or CIFAR (``stem="cifar"``) stem."""
  block_sizes: Sequence[int]
  growth_rate: int = 32
  num_init_features: int = 64
  bottleneck: bool = True
  bn_size: int = 4
  compression: float = 0.5  # theta: a transition keeps floor(theta * m) of its m input maps
  stem: str = "imagenet"
  drop_rate: float = 0.0
  se_ratio: int | None = None
  num_classes: int = 1000
  bn_epsilon: float = 1e-5  # torchvision's (Keras's DenseNets: 1.001e-5)
  # Recompute each dense layer (its BN-ReLU-conv of the concatenated input) in the backward pass instead of keeping
  # it: Pleiss et al. 2017's memory-efficient DenseNet, memory linear instead of quadratic in the depth.
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if not 0.0 < self.compression <= 1.0:
      raise ValueError(f"compression must be in (0, 1], got {self.compression}")
    x = jnp.asarray(x, self.dtype)
    if self.stem == "imagenet":
      # The stem is the one post-activation unit (conv -> BN -> ReLU), as in torchvision.
      x = ConvBN(self.num_init_features, (7, 7), strides=(2, 2), kernel_init=conv_kernel_init,
                 momentum=BN_MOMENTUM, epsilon=self.bn_epsilon, dtype=self.dtype, name="stem")(x, train)
      # Padding 1 on every side like nn.MaxPool2d(3, 2, 1); Flax pads max-pool windows with -inf.
      x = max_pool(x, (3, 3), strides=(2, 2), padding=symmetric_padding((3, 3)))
    elif self.stem == "cifar":
      x = _conv(self.num_init_features, 3, name="conv0", dtype=self.dtype)(x)
    else:
      raise ValueError(f"unknown stem {self.stem!r}; use 'imagenet' or 'cifar'")

    layer = maybe_remat(DenseLayer, self.remat)
    for i, num_layers in enumerate(self.block_sizes):
      # Each layer gets the block's maps so far and concatenates them itself: rematerialised, a layer then keeps
      # only its new maps for the backward pass, not its concatenated input (the memory-efficient DenseNet).
      features = [x]
      for j in range(num_layers):
        features.append(layer(self.growth_rate, bottleneck=self.bottleneck, bn_size=self.bn_size,
                              drop_rate=self.drop_rate, se_ratio=self.se_ratio, bn_epsilon=self.bn_epsilon,
                              dtype=self.dtype, name=f"denseblock{i + 1}_denselayer{j + 1}")(tuple(features), train))
      x = jnp.concatenate(features, axis=-1)
      if i < len(self.block_sizes) - 1:
        features = int(math.floor(x.shape[-1] * self.compression))
        x = Transition(features, drop_rate=self.drop_rate, bn_epsilon=self.bn_epsilon, dtype=self.dtype,
                       name=f"transition{i + 1}")(x, train)

    # The last block's output is the raw concatenation of conv outputs: normalise and rectify before pooling.
    x = _bn_relu(train, epsilon=self.bn_epsilon, name="norm5", dtype=self.dtype)(x)
    x = jnp.mean(x, axis=(1, 2))  # global average pooling: any input resolution works
    return nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)


densenet121 = functools.partial(DenseNet, block_sizes=(6, 12, 24, 16), growth_rate=32, num_init_features=64)
densenet169 = functools.partial(DenseNet, block_sizes=(6, 12, 32, 32), growth_rate=32, num_init_features=64)
densenet201 = functools.partial(DenseNet, block_sizes=(6, 12, 48, 32), growth_rate=32, num_init_features=64)
densenet161 = functools.partial(DenseNet, block_sizes=(6, 12, 36, 24), growth_rate=48, num_init_features=96)


def _cifar_densenet(depth: int, growth_rate: int, bottleneck: bool, compression: float, num_init_features: int):
  # L counts the stem conv, the transition convs (2) and the classifier (1) plus 1 or 2 convs per dense layer.
  convs_per_layer = 2 if bottleneck else 1
  if (depth - 4) % (3 * convs_per_layer):
    raise ValueError(f"CIFAR DenseNet depth {depth} is not 3 * {convs_per_layer} * n + 4")
  n = (depth - 4) // (3 * convs_per_layer)
  return functools.partial(DenseNet, block_sizes=(n, n, n), growth_rate=growth_rate, bottleneck=bottleneck,
                           compression=compression, num_init_features=num_init_features, stem="cifar",
                           num_classes=10)


densenet_bc_100 = _cifar_densenet(100, growth_rate=12, bottleneck=True, compression=0.5, num_init_features=24)
densenet40 = _cifar_densenet(40, growth_rate=12, bottleneck=False, compression=1.0, num_init_features=16)

# Weight mappings (cnn_flax.convert). torchvision keeps every module under ``features`` except the classifier.
TORCHVISION_RULES = [
    (r"stem/conv", "features.conv0", None), (r"stem/bn", "features.norm0", None),
    (r"(denseblock\d)_(denselayer\d+)/(norm|conv)(\d)", r"features.\1.\2.\3\4", None),
    (r"(transition\d)/(norm|conv)", r"features.\1.\2", None),
    (r"norm5", "features.norm5", None), (r"classifier", "classifier", None),
]
# Keras counts dense blocks from 2 (the stem is conv1) and names a layer's units by their order in it.
_KERAS_LAYER_UNITS = {"norm1": "0_bn", "conv1": "1_conv", "norm2": "1_bn", "conv2": "2_conv"}
KERAS_RULES = [
    (r"stem/(conv|bn)", r"conv1_\1", None),
    (r"denseblock(\d)_denselayer(\d+)/(\w+)",
     lambda m: f"conv{int(m[1]) + 1}_block{m[2]}_{_KERAS_LAYER_UNITS[m[3]]}", None),
    (r"transition(\d)/(conv|norm)", lambda m: f"pool{int(m[1]) + 1}_{'bn' if m[2] == 'norm' else 'conv'}", None),
    (r"norm5", "bn", None), (r"classifier", "predictions", None),
]

for _name, _ctor in [("densenet121", densenet121), ("densenet169", densenet169), ("densenet201", densenet201),
                     ("densenet161", densenet161)]:
  # Keras has no DenseNet-161.
  _keras = None if _name == "densenet161" else registry.KerasMapping((_name,), KERAS_RULES, epsilon=1.001e-5)
  registry.register(_name, _ctor, input_size=224, reference="Huang et al. 2017 / torchvision densenet",
                    torchvision_rules=TORCHVISION_RULES, keras=_keras)
registry.register("densenet_bc_100", densenet_bc_100, input_size=32,
                  reference="Huang et al. 2017 DenseNet-BC (L=100, k=12) for CIFAR")
registry.register("densenet40", densenet40, input_size=32,
                  reference="Huang et al. 2017 DenseNet (L=40, k=12, no bottleneck or compression) for CIFAR")
del _name, _ctor, _keras
