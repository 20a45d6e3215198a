"""MobileNet v1 (Howard et al. 2017, "MobileNets: Efficient convolutional neural networks for mobile vision
applications"), Table 1, with the width multiplier alpha of sec. 3.3.

A 3x3/2 standard conv (32 alpha channels) then 13 depthwise-separable blocks (``layers.DepthwiseSeparable``:
3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU), global average pooling, dropout and a fully connected
classifier. The reference implementations (TF-slim ``mobilenet_v1``, Keras ``applications.MobileNet``) use a 1x1
conv with bias as the classifier; on a 1x1 map that is a dense layer with the same parameters, so a ``Dense`` is
used. Channel counts are ``int(c * alpha)`` (no rounding to multiples of 8; that is MobileNet v2's rule), floored at
``min_depth`` = 8 as in TF-slim (never binding for alpha >= 0.25).
Parameters for 1000 classes: 4,231,976 (alpha 1.0), 2,585,560 (0.75), 1,331,592 (0.5), 470,072 (0.25);
the paper rounds these to 4.2M / 2.6M / 1.3M / 0.5M.

Stated deviations and choices:
* The last depthwise conv has stride 1, as in every implementation: Table 1 lists "Conv dw / s2" on a 7x7 input
  whose output is also 7x7, which only stride 1 gives.
* ReLU as in the paper (Fig. 3); the TF implementations use ReLU6 (``act=nn.relu6``).
* 'SAME' padding, as TF (stride-2 layers pad (0, 1) on even inputs), so TF/Keras weights line up.
* Dropout 1e-3 before the classifier (TF-slim / Keras default ``dropout=1e-3``; the paper only says it uses little
  regularisation).
* Any input resolution (the resolution multiplier rho of sec. 3.4 is just a smaller input).
``se_ratio`` (None = off) adds squeeze-and-excitation inside each block: an ablation, not part of MobileNet v1.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from cnn_flax.models import registry
from cnn_flax.models.layers import ConvBN, DepthwiseSeparable, SqueezeExcite, maybe_remat

# Table 1, one (pointwise output channels, depthwise stride) per depthwise-separable block. The last block's
# depthwise stride is 1, not the table's 2 (see the module docstring).
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
          (1024, 2), (1024, 1))


class MobileNetV1(nn.Module):
  num_classes: int = 1000
  width_multiplier: float = 1.0
  min_depth: int = 8
  dropout_rate: float = 1e-3
  act: Callable = nn.relu
  se_ratio: int | None = None
  bn_epsilon: float = 1e-5  # as the zoo's other models (TF-slim and Keras use 1e-3)
  # False: every depthwise-separable block becomes one full 3x3 conv + BN + ReLU ("Conv MobileNet" of Table 4:
  # 29.3M parameters, 4,866M MACs against 4.2M and 569M), an ablation.
  separable: bool = True
  remat: bool = False  # recompute each block's activations in the backward pass (config.remat)
  dtype: Any = jnp.float32

  def depth(self, channels: int) -> int:
    return max(int(channels * self.width_multiplier), self.min_depth)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.width_multiplier <= 0:
      raise ValueError(f"width_multiplier must be positive, got {self.width_multiplier}")
    x = ConvBN(self.depth(32), (3, 3), strides=(2, 2), padding="SAME", act=self.act, epsilon=self.bn_epsilon,
               dtype=self.dtype, name="conv1")(x, train)
    for i, (features, stride) in enumerate(BLOCKS, start=1):
      if self.separable:
        block = maybe_remat(DepthwiseSeparable, self.remat)
        x = block(self.depth(features), strides=(stride, stride), se_ratio=self.se_ratio, act=self.act,
                  padding="SAME", bn_epsilon=self.bn_epsilon, dtype=self.dtype, name=f"block{i}")(x, train)
      else:
        x = maybe_remat(ConvBN, self.remat)(self.depth(features), (3, 3), strides=(stride, stride), padding="SAME",
                                            act=self.act, epsilon=self.bn_epsilon, dtype=self.dtype,
                                            name=f"block{i}")(x, train)
        if self.se_ratio is not None:
          x = SqueezeExcite(self.se_ratio, dtype=self.dtype, name=f"block{i}_se")(x)
    x = jnp.mean(x, axis=(1, 2))  # the 7x7 average pool at 224 px, for any resolution
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


mobilenet_v1 = MobileNetV1


def _keras_overrides(arrays) -> dict[str, Any]:
  """Keras's MobileNet uses ReLU6 (as TF-slim); its width multiplier shows in the last pointwise conv's width."""
  overrides: dict[str, Any] = {"act": nn.relu6}
  if "conv_pw_13" in arrays:
    overrides["width_multiplier"] = arrays["conv_pw_13"][0].shape[-1] / 1024
  return overrides


# Weight mapping (cnn_flax.convert) for keras.applications.MobileNet.
KERAS = registry.KerasMapping(
    ("mobilenet", "mobilenet_v1"),
    [(r"conv1/conv", "conv1", None), (r"conv1/bn", "conv1_bn", None),
     (r"block(\d+)/depthwise/conv", r"conv_dw_\1", "depthwise"), (r"block(\d+)/depthwise/bn", r"conv_dw_\1_bn", None),
     (r"block(\d+)/pointwise/conv", r"conv_pw_\1", None), (r"block(\d+)/pointwise/bn", r"conv_pw_\1_bn", None),
     (r"fc", "conv_preds", "squeeze")],  # Keras's classifier is a 1x1 conv on the pooled 1x1 map
    epsilon=1e-3, head="conv_preds", overrides=_keras_overrides)

registry.register("mobilenet_v1", mobilenet_v1, input_size=224,
                  reference="Howard et al. 2017 Table 1 (width_multiplier field); last depthwise stride 1",
                  keras=KERAS)
