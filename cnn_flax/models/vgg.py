"""VGG (Simonyan and Zisserman 2015, "Very deep convolutional networks for large-scale image recognition"),
configurations A, A-LRN, B, C, D and E of Table 1, built the way torchvision builds them.

Names: ``vgg11`` (A), ``vgg11_lrn`` (A-LRN), ``vgg13`` (B), ``vgg16_c`` (C: a 1x1 conv as the third conv of
stages 3-5), ``vgg16`` (D), ``vgg19`` (E), and torchvision's batch-normalised ``vgg11_bn``, ``vgg13_bn``,
``vgg16_bn``, ``vgg19_bn`` (BN after every conv, before the ReLU). All are ``functools.partial`` of ``VGG``.

Following torchvision: 3x3 convs with padding 1, max-pool 2x2/2 after each stage, an adaptive average pool to 7x7
before the classifier (an identity at 224 px, and what lets other resolutions through: the paper instead turns
the FC layers into convolutions at test time), classifier fc 4096 -> ReLU -> dropout 0.5 -> fc 4096 -> ReLU ->
dropout 0.5 -> fc classes, and torchvision's initialisation (convs Kaiming-normal fan-out, FC N(0, 0.01), biases 0;
the paper initialised A randomly and deeper nets from A, which is impractical here).
A-LRN: the paper's LRN (AlexNet's: size 5, alpha 1e-4, beta 0.75, k 2, alpha not divided by size) after the ReLU
of the first conv. Flattening is NHWC (H, W, C); torchvision flattens (C, H, W).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnn_flax.models import registry
from cnn_flax.models.batchnorm import BatchNorm
from cnn_flax.models.layers import Conv, LocalResponseNorm, adaptive_avg_pool, max_pool

# Each stage is a tuple of (out_channels, kernel) convs; a 2x2/2 max-pool follows every stage.


def _S(c: int, n: int) -> tuple[tuple[int, int], ...]:
  """n 3x3 convs of c channels."""
  return tuple((c, 3) for _ in range(n))


CONFIGS: dict[str, tuple[tuple[tuple[int, int], ...], ...]] = {
    "A": (_S(64, 1), _S(128, 1), _S(256, 2), _S(512, 2), _S(512, 2)),
    "B": (_S(64, 2), _S(128, 2), _S(256, 2), _S(512, 2), _S(512, 2)),
    "C": (_S(64, 2), _S(128, 2), _S(256, 2) + ((256, 1),), _S(512, 2) + ((512, 1),), _S(512, 2) + ((512, 1),)),
    "D": (_S(64, 2), _S(128, 2), _S(256, 3), _S(512, 3), _S(512, 3)),
    "E": (_S(64, 2), _S(128, 2), _S(256, 4), _S(512, 4), _S(512, 4)),
}


def one_large_kernel(stage: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
  """A stage with each run of n stacked 3x3 convs of one width replaced by one (2n+1)x(2n+1) conv: the same
  receptive field from one layer (sec. 2.3: two 3x3 see 5x5, three see 7x7). Other convs (C's 1x1) stay."""
  out: list[tuple[int, int]] = []
  run = 0
  for i, (features, k) in enumerate(stage):
    run = run + 1 if k == 3 else 0
    following = stage[i + 1] if i + 1 < len(stage) else None
    if k == 3 and following == (features, 3):
      continue  # the run goes on
    out.append((features, 2 * run + 1) if k == 3 else (features, k))
    run = 0
  return tuple(out)


class VGG(nn.Module):
  """A VGG network from a stage configuration (see ``CONFIGS``).

  ``large_kernels=True`` replaces each stage's stack of 3x3 convs by one conv of the same receptive field
  (``one_large_kernel``): the comparison of sec. 4.1, where B with each pair of 3x3 convs replaced by one 5x5 had a
  7% higher top-1 error. An ablation; no torchvision weights map onto it.
  """
  stages: Sequence[Sequence[tuple[int, int]]] = CONFIGS["D"]
  large_kernels: bool = False
  batch_norm: bool = False
  lrn: bool = False  # A-LRN: LRN after the first conv's ReLU
  num_classes: int = 1000
  classifier_width: int = 4096
  dropout_rate: float = 0.5
  bn_epsilon: float = 1e-5  # torchvision's (Keras's VGGs have no BatchNorm)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision: kaiming_normal_ fan_out
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=nn.initializers.normal(0.01))
    stages = [one_large_kernel(st) for st in self.stages] if self.large_kernels else self.stages
    for s, stage in enumerate(stages, start=1):
      for i, (features, k) in enumerate(stage, start=1):
        pad = (k - 1) // 2  # 1 for 3x3 (size-preserving), 0 for config C's 1x1
        x = Conv(features, (k, k), padding=((pad, pad), (pad, pad)), kernel_init=conv_init, dtype=self.dtype,
                 name=f"conv{s}_{i}")(x)
        if self.batch_norm:  # BatchNorm and ReLU in one (in oneDNN's single pass on a CPU)
          x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=self.bn_epsilon, dtype=self.dtype,
                        relu=True, name=f"bn{s}_{i}")(x)
        else:
          x = nn.relu(x)
        if self.lrn and s == 1 and i == 1:
          x = LocalResponseNorm(dtype=self.dtype, name="lrn")(x)
      x = max_pool(x, (2, 2), strides=(2, 2))
    x = adaptive_avg_pool(x, 7)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(dense(self.classifier_width, name="fc6")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(dense(self.classifier_width, name="fc7")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes, name="fc8")(x)


vgg11 = functools.partial(VGG, stages=CONFIGS["A"])
vgg11_lrn = functools.partial(VGG, stages=CONFIGS["A"], lrn=True)
vgg13 = functools.partial(VGG, stages=CONFIGS["B"])
vgg16_c = functools.partial(VGG, stages=CONFIGS["C"])
vgg16 = functools.partial(VGG, stages=CONFIGS["D"])
vgg19 = functools.partial(VGG, stages=CONFIGS["E"])
vgg11_bn = functools.partial(VGG, stages=CONFIGS["A"], batch_norm=True)
vgg13_bn = functools.partial(VGG, stages=CONFIGS["B"], batch_norm=True)
vgg16_bn = functools.partial(VGG, stages=CONFIGS["D"], batch_norm=True)
vgg19_bn = functools.partial(VGG, stages=CONFIGS["E"], batch_norm=True)


def torchvision_rules(model: VGG) -> list[registry.Rule]:
  """Flax module -> torchvision key prefix for ``model``'s configuration.

  torchvision's ``features`` is one Sequential: conv(, bn), relu per conv and a max-pool after each stage, so a
  conv's index depends on everything before it. fc6 multiplies the flattened 7x7x512 map, ordered (C, H, W) there.
  """
  rules, index = [], 0
  for s, stage in enumerate(model.stages, start=1):
    for i in range(1, len(stage) + 1):
      rules.append((f"conv{s}_{i}", f"features.{index}", None))
      if model.batch_norm:
        rules.append((f"bn{s}_{i}", f"features.{index + 1}", None))
      index += 3 if model.batch_norm else 2
    index += 1  # the stage's max-pool
  return rules + [("fc6", "classifier.0", ("chw", 512, 7, 7)), ("fc7", "classifier.3", None),
                  ("fc8", "classifier.6", None)]


def _keras_overrides(arrays) -> dict[str, Any]:
  # Keras's fc1 width is a free choice of whoever built the head (4096 in the published weights).
  return {"classifier_width": int(arrays["fc1"][0].shape[-1])} if "fc1" in arrays else {}


def _keras(application: str) -> registry.KerasMapping:
  rules = [(r"conv(\d)_(\d)", r"block\1_conv\2", None), ("fc6", "fc1", None), ("fc7", "fc2", None),
           ("fc8", "predictions", None)]
  return registry.KerasMapping((application,), rules, overrides=_keras_overrides)


_PAPER = "Simonyan & Zisserman 2015 config {} (torchvision layout: adaptive 7x7 pool)"
_KERAS = {"vgg16": _keras("vgg16"), "vgg19": _keras("vgg19")}
# (name, constructor, reference, torchvision has it): torchvision has no A-LRN or C.
for _name, _ctor, _ref, _in_torchvision in (
    ("vgg11", vgg11, _PAPER.format("A"), True),
    ("vgg11_lrn", vgg11_lrn, _PAPER.format("A-LRN"), False),
    ("vgg13", vgg13, _PAPER.format("B"), True),
    ("vgg16_c", vgg16_c, _PAPER.format("C"), False),
    ("vgg16", vgg16, _PAPER.format("D"), True),
    ("vgg19", vgg19, _PAPER.format("E"), True),
    ("vgg11_bn", vgg11_bn, "torchvision vgg11_bn (config A + BatchNorm)", True),
    ("vgg13_bn", vgg13_bn, "torchvision vgg13_bn (config B + BatchNorm)", True),
    ("vgg16_bn", vgg16_bn, "torchvision vgg16_bn (config D + BatchNorm)", True),
    ("vgg19_bn", vgg19_bn, "torchvision vgg19_bn (config E + BatchNorm)", True),
):
  registry.register(_name, _ctor, input_size=224, reference=_ref,
                    torchvision_rules=torchvision_rules if _in_torchvision else None, keras=_KERAS.get(_name))
