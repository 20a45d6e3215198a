"""Residual networks (He, Zhang, Ren, Sun 2016, "Deep residual learning for image recognition").

Two families:

* ImageNet ResNets ``resnet18/34/50/101/152`` follow torchvision (``torchvision.models.resnet``): 7x7 stem,
  3x3 max-pool, basic (18/34) or bottleneck (50+) blocks, identity shortcuts with a 1x1 projection + BN where
  the shape changes (the paper's option B). By default the bottleneck puts its stride on the 3x3 conv
  ("ResNet v1.5", torchvision and most modern releases); ``stride_on_3x3=False`` puts it on the first 1x1 as in
  the 2016 paper (v1). Both have the same parameters (25,557,032 for ResNet-50) but v1 does fewer MACs.
  Every strided conv and the stem max-pool use explicit symmetric padding (PyTorch semantics): Flax ``'SAME'``
  pads (0, 1) on stride-2 layers, which would shift features by a pixel relative to torchvision weights.
  Module names follow torchvision so imported weights map one to one: ``conv1``/``bn1`` (stem) -> ``stem/conv``,
  ``stem/bn``; ``layer2.0.conv1``/``bn1`` -> ``layer2_0/conv_bn1/conv``, ``.../bn``; ``downsample.0``/``.1`` ->
  ``downsample/conv``, ``downsample/bn``; ``fc`` -> ``fc`` (each conv + BN pair is a ``layers.ConvBN``).
* CIFAR ResNets ``resnet20/32/44/56/110`` follow section 4.2 of the paper: 3x3 stem with 16 maps, three stages of
  n basic blocks with 16-32-64 maps, global average pooling, dense head; depth = 6n + 2. Shortcuts are the
  paper's option A: parameter-free, stride-2 subsampling plus zero channels where the width doubles. The new zero
  channels are split evenly on both sides, as in the widely used PyTorch reimplementation (akamaster), so that
  its CIFAR weights would import unchanged; the paper does not say where they go and it makes no difference to
  training.

Options shared by both: ``plain=True`` removes every shortcut (the paper's "plain" networks of the degradation
experiment; the projection convs disappear with them), ``zero_init_last_bn=True`` starts each block's last BN
scale at zero so every block begins as the identity (Goyal et al. 2017), and ``se_ratio`` adds a
squeeze-and-excitation gate to the residual branch after its last BN, before the addition (Hu et al. 2018; the
SE-ResNets of ``senet.py`` are these modules with ``se_ratio=16``).

Initialisation follows torchvision: He-normal convs (fan-out), BN scale 1 and bias 0. The dense head uses Flax's
default (LeCun normal, zero bias) instead of PyTorch's uniform default; this does not affect imported weights.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnn_flax.models import registry
from cnn_flax.models.layers import ConvBN, SqueezeExcite, max_pool, maybe_remat, symmetric_padding

# Flax's momentum is the weight of the old running average: 0.9 here is PyTorch's momentum=0.1.
BN_MOMENTUM = 0.9

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), an untruncated normal.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_bn(features: int, kernel_size: int, strides: int = 1, *, act=nn.relu, zero_scale: bool = False,
            bn_epsilon: float, name: str, dtype: Any) -> ConvBN:
  """Bias-free conv + BN (+ ReLU) with symmetric PyTorch padding (ConvBN's default, whatever the stride).

  ``zero_scale`` starts the BN scale at zero (``zero_init_last_bn``); ``bn_epsilon`` is the BatchNorm's epsilon.
  """
  return ConvBN(features, (kernel_size, kernel_size), strides=(strides, strides), act=act,
                kernel_init=conv_kernel_init, momentum=BN_MOMENTUM, epsilon=bn_epsilon,
                scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
                dtype=dtype, name=name)


def option_a_shortcut(x, features: int, strides: int):
  """The paper's option A: subsample by the stride and zero-pad the new channels (no parameters).

  Taking every ``strides``-th pixel from the top-left matches a stride-2 3x3 conv with padding 1, whose output
  pixel i is centred on input pixel 2i.
  """
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
  missing = features - x.shape[-1]
  if missing < 0:
    raise ValueError(f"option-A shortcut cannot reduce {x.shape[-1]} channels to {features}")
  if missing:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (missing // 2, missing - missing // 2)))
  return x


def _merge_branch(x, y, *, strides: int, shortcut: str, plain: bool, se_ratio: int | None, train: bool,
                  bn_epsilon: float, dtype: Any):
  """Finishes a residual block: SE on the branch (after its last BN), shortcut, addition, ReLU.

  Called from inside a block's compact ``__call__``, so the modules it creates belong to that block.
  """
  if se_ratio is not None:
    # Hu et al. 2018, Fig. 3: the gate rescales the residual branch only, before it meets the identity.
    y = SqueezeExcite(se_ratio, dtype=dtype, name="se")(y)
  if plain:
    return nn.relu(y)
  features = y.shape[-1]
  if shortcut == "A":
    residual = option_a_shortcut(x, features, strides)
  elif shortcut == "B":
    residual = x
    if strides != 1 or x.shape[-1] != features:
      # Projection only where the shape changes (option B, torchvision's `downsample`).
      residual = conv_bn(features, 1, strides, act=None, bn_epsilon=bn_epsilon, name="downsample",
                         dtype=dtype)(x, train)
  else:
    raise ValueError(f"unknown shortcut type {shortcut!r}; use 'A' or 'B'")
  return nn.relu(residual + y)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34 and the CIFAR ResNets); ``features`` output channels."""
  features: int
  strides: int = 1
  shortcut: str = "B"  # "B": identity or 1x1 projection (ImageNet); "A": parameter-free (CIFAR)
  plain: bool = False
  se_ratio: int | None = None
  zero_init_last_bn: bool = False
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(conv_bn, bn_epsilon=self.bn_epsilon, dtype=self.dtype)
    y = conv(self.features, 3, self.strides, name="conv_bn1")(x, train)
    y = conv(self.features, 3, act=None, zero_scale=self.zero_init_last_bn, name="conv_bn2")(y, train)
    return _merge_branch(x, y, strides=self.strides, shortcut=self.shortcut, plain=self.plain,
                         se_ratio=self.se_ratio, train=train, bn_epsilon=self.bn_epsilon, dtype=self.dtype)


class BottleneckBlock(nn.Module):
  """1x1 reduce -> 3x3 -> 1x1 expand (ResNet-50/101/152); ``features`` is the bottleneck width, output is 4x."""
  features: int
  strides: int = 1
  stride_on_3x3: bool = True  # v1.5 (torchvision); False: stride on the first 1x1 (He 2016, v1)
  shortcut: str = "B"
  plain: bool = False
  se_ratio: int | None = None
  zero_init_last_bn: bool = False
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x, train: bool):
    # v1 subsamples with a strided 1x1, which discards 3/4 of the positions before any 3x3 sees them; v1.5
    # moves the stride to the 3x3 (about +0.5% top-1 for ~6% more MACs).
    stride_1x1, stride_3x3 = (1, self.strides) if self.stride_on_3x3 else (self.strides, 1)
    conv = functools.partial(conv_bn, bn_epsilon=self.bn_epsilon, dtype=self.dtype)
    y = conv(self.features, 1, stride_1x1, name="conv_bn1")(x, train)
    y = conv(self.features, 3, stride_3x3, name="conv_bn2")(y, train)
    y = conv(self.features * self.expansion, 1, act=None, zero_scale=self.zero_init_last_bn, name="conv_bn3")(
        y, train)
    return _merge_branch(x, y, strides=self.strides, shortcut=self.shortcut, plain=self.plain,
                         se_ratio=self.se_ratio, train=train, bn_epsilon=self.bn_epsilon, dtype=self.dtype)


class ResNet(nn.Module):
  """ImageNet ResNet (torchvision layout). Blocks are named ``layer{stage}_{index}`` as in torchvision."""
  stage_sizes: Sequence[int]
  block: type[nn.Module] = BasicBlock  # BasicBlock or BottleneckBlock
  num_classes: int = 1000
  num_filters: int = 64
  stride_on_3x3: bool = True  # only meaningful for bottleneck blocks
  zero_init_last_bn: bool = False
  plain: bool = False
  se_ratio: int | None = None
  bn_epsilon: float = 1e-5  # torchvision's (Keras's ResNets: 1.001e-5)
  remat: bool = False  # recompute each block's activations in the backward pass (config.remat)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = jnp.asarray(x, self.dtype)
    block = maybe_remat(self.block, self.remat)
    x = conv_bn(self.num_filters, 7, 2, bn_epsilon=self.bn_epsilon, name="stem", dtype=self.dtype)(x, train)
    # Padding 1 on every side like nn.MaxPool2d(3, 2, 1); Flax pads max-pool windows with -inf.
    x = max_pool(x, (3, 3), strides=(2, 2), padding=symmetric_padding((3, 3)))
    block_kwargs = {}
    if issubclass(self.block, BottleneckBlock):
      block_kwargs["stride_on_3x3"] = self.stride_on_3x3
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block(self.num_filters * 2**i, strides=strides, shortcut="B", plain=self.plain,
                  se_ratio=self.se_ratio, zero_init_last_bn=self.zero_init_last_bn, bn_epsilon=self.bn_epsilon,
                  dtype=self.dtype, name=f"layer{i + 1}_{j}", **block_kwargs)(x, train)
    x = jnp.mean(x, axis=(1, 2))  # global average pooling: any input resolution works
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


class CifarResNet(nn.Module):
  """The CIFAR-10 ResNets of He et al. 2016 section 4.2 (depth 6n+2, option-A shortcuts by default)."""
  stage_sizes: Sequence[int]  # n blocks per stage, three stages
  num_classes: int = 10
  num_filters: int = 16
  shortcut: str = "A"  # "B" gives the projection variant the paper compares against on ImageNet
  zero_init_last_bn: bool = False
  plain: bool = False
  se_ratio: int | None = None
  bn_epsilon: float = 1e-5  # torchvision's (Keras's ResNets: 1.001e-5)
  remat: bool = False  # recompute each block's activations in the backward pass (config.remat)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = jnp.asarray(x, self.dtype)
    block = maybe_remat(BasicBlock, self.remat)
    # 32x32 inputs: a 3x3 stride-1 stem and no max-pool, so the stages run at 32, 16 and 8 pixels.
    x = conv_bn(self.num_filters, 3, bn_epsilon=self.bn_epsilon, name="stem", dtype=self.dtype)(x, train)
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block(self.num_filters * 2**i, strides=strides, shortcut=self.shortcut, plain=self.plain,
                  se_ratio=self.se_ratio, zero_init_last_bn=self.zero_init_last_bn, bn_epsilon=self.bn_epsilon,
                  dtype=self.dtype, name=f"layer{i + 1}_{j}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


resnet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
resnet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock)
resnet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block=BottleneckBlock)
resnet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=BottleneckBlock)


def _cifar_resnet(depth: int):
  if (depth - 2) % 6:
    raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
  n = (depth - 2) // 6
  return functools.partial(CifarResNet, stage_sizes=(n, n, n))


resnet20 = _cifar_resnet(20)
resnet32 = _cifar_resnet(32)
resnet44 = _cifar_resnet(44)
resnet56 = _cifar_resnet(56)
resnet110 = _cifar_resnet(110)

# Weight mappings (cnn_flax.convert). torchvision's names are the modules' own, with '.' for '/'.
TORCHVISION_RULES = [
    (r"stem/conv", "conv1", None), (r"stem/bn", "bn1", None),
    (r"(layer\d)_(\d+)/conv_bn(\d)/conv", r"\1.\2.conv\3", None),
    (r"(layer\d)_(\d+)/conv_bn(\d)/bn", r"\1.\2.bn\3", None),
    (r"(layer\d)_(\d+)/downsample/conv", r"\1.\2.downsample.0", None),
    (r"(layer\d)_(\d+)/downsample/bn", r"\1.\2.downsample.1", None),
    (r"fc", "fc", None),
]
# Keras counts stages from 2 (the stem is conv1) and blocks from 1, and calls the projection shortcut branch 0.
KERAS_RULES = [
    (r"stem/(conv|bn)", r"conv1_\1", None),
    (r"layer(\d)_(\d+)/conv_bn(\d)/(conv|bn)", lambda m: f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_{m[3]}_{m[4]}",
     None),
    (r"layer(\d)_(\d+)/downsample/(conv|bn)", lambda m: f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_0_{m[3]}", None),
    (r"fc", "predictions", None),
]


def _keras(application: str) -> registry.KerasMapping:
  # Keras's ResNets are v1: the stride sits on the first 1x1 of a bottleneck.
  return registry.KerasMapping((application,), KERAS_RULES, epsilon=1.001e-5,
                               overrides=lambda arrays: {"stride_on_3x3": False})


for _name, _ctor in [("resnet18", resnet18), ("resnet34", resnet34)]:
  registry.register(_name, _ctor, input_size=224,
                    reference="He et al. 2016 / torchvision resnet (option-B shortcuts)",
                    torchvision_rules=TORCHVISION_RULES)
for _name, _ctor in [("resnet50", resnet50), ("resnet101", resnet101), ("resnet152", resnet152)]:
  registry.register(_name, _ctor, input_size=224,
                    reference="torchvision resnet v1.5 (stride on the 3x3); stride_on_3x3=False gives He et al. 2016",
                    torchvision_rules=TORCHVISION_RULES, keras=_keras(_name))
for _name, _ctor in [("resnet20", resnet20), ("resnet32", resnet32), ("resnet44", resnet44),
                     ("resnet56", resnet56), ("resnet110", resnet110)]:
  registry.register(_name, _ctor, input_size=32,
                    reference="He et al. 2016 section 4.2 (CIFAR-10, 16-32-64, option-A shortcuts)")
del _name, _ctor
