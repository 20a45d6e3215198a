"""AlexNet, two readings.

* ``alexnet``: torchvision's ``alexnet`` (the single-tower "one weird trick" variant, Krizhevsky 2014):
  conv 64-192-384-256-256, no LRN, max-pool 3x3/2, adaptive average pooling to 6x6 before the classifier (so any
  resolution from about 63 px up works), dropout 0.5 before fc6 and fc7. 61,100,840 parameters for 1000 classes.
* ``alexnet_paper``: Krizhevsky, Sutskever, Hinton 2012, "ImageNet classification with deep convolutional neural
  networks": conv 96-256-384-384-256 on a 227x227 input, ReLU then local response normalisation (size 5,
  alpha 1e-4, beta 0.75, k 2, alpha *not* divided by size: the paper's formula) after conv1 and conv2, overlapping
  max-pooling 3x3/2 after the two LRNs and after conv5, groups=2 on conv2/4/5 (the two-GPU split: those layers
  only see the kernel maps on their own GPU), dropout 0.5 on the outputs of fc6 and fc7, the paper's
  initialisation (weights N(0, 0.01); biases 1 on conv2, conv4, conv5 and the hidden fully connected layers, 0
  elsewhere). 60,965,224 parameters for 1000 classes.
  Stated deviations: the 227 px input (the paper's "224" does not give its 55x55 conv1 map); an adaptive average
  pool to 6x6 before fc6, an identity at 227 px, so that other resolutions work too.

Both flatten the 6x6x256 map in NHWC (H, W, C) order; torchvision flattens (C, H, W): a weight import must permute
fc6's input rows.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnn_flax.models import registry
from cnn_flax.models.layers import Conv, LocalResponseNorm, adaptive_avg_pool, max_pool


def _max_pool(x):
  # Overlapping pooling (sec. 3.4): 3x3 windows, stride 2, no padding.
  return max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class AlexNet(nn.Module):
  """torchvision's single-tower AlexNet."""
  num_classes: int = 1000
  classifier_width: int = 4096  # fc6/fc7 width; smaller values only for tests and quick experiments
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(Conv, dtype=self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    x = nn.relu(conv(64, (11, 11), strides=(4, 4), padding=((2, 2), (2, 2)), name="conv1")(x))
    x = _max_pool(x)
    x = nn.relu(conv(192, (5, 5), padding=((2, 2), (2, 2)), name="conv2")(x))
    x = _max_pool(x)
    x = nn.relu(conv(384, (3, 3), padding=((1, 1), (1, 1)), name="conv3")(x))
    x = nn.relu(conv(256, (3, 3), padding=((1, 1), (1, 1)), name="conv4")(x))
    x = nn.relu(conv(256, (3, 3), padding=((1, 1), (1, 1)), name="conv5")(x))
    x = _max_pool(x)
    x = adaptive_avg_pool(x, 6)  # the classifier always sees 6x6x256 = 9216 features
    x = x.reshape((x.shape[0], -1))
    # torchvision order: dropout *before* each of fc6 and fc7.
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(dense(self.classifier_width, name="fc6")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(dense(self.classifier_width, name="fc7")(x))
    return dense(self.num_classes, name="fc8")(x)


class AlexNetPaper(nn.Module):
  """AlexNet as published in 2012 (two-tower grouping, LRN, paper initialisation)."""
  num_classes: int = 1000
  classifier_width: int = 4096  # fc6/fc7 width; smaller values only for tests and quick experiments
  dropout_rate: float = 0.5
  lrn: bool = True  # False: without the response normalisation of sec. 3.3 (its ablation: -1.4 / -1.2 points)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    # Sec. 5: weights from N(0, 0.01); biases 1 in conv2/4/5 and the hidden FC layers ("accelerates the early
    # stages of learning by providing the ReLUs with positive inputs"), 0 elsewhere.
    init = nn.initializers.normal(0.01)
    conv = functools.partial(Conv, dtype=self.dtype, kernel_init=init)
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=init)
    ones, zeros = nn.initializers.ones, nn.initializers.zeros
    norm = functools.partial(LocalResponseNorm, size=5, alpha=1e-4, beta=0.75, k=2.0, dtype=self.dtype)
    lrn = norm if self.lrn else (lambda name: lambda x: x)

    x = nn.relu(conv(96, (11, 11), strides=(4, 4), padding="VALID", bias_init=zeros, name="conv1")(x))
    x = _max_pool(lrn(name="lrn1")(x))  # 227 -> 55 -> 27
    # groups=2: each half of conv2's kernels sees only the 48 maps of its own GPU.
    x = nn.relu(conv(256, (5, 5), padding=((2, 2), (2, 2)), feature_group_count=2, bias_init=ones,
                     name="conv2")(x))
    x = _max_pool(lrn(name="lrn2")(x))  # 27 -> 13
    # conv3 is the one convolution whose kernels are connected to all kernel maps of the previous layer.
    x = nn.relu(conv(384, (3, 3), padding=((1, 1), (1, 1)), bias_init=zeros, name="conv3")(x))
    x = nn.relu(conv(384, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=2, bias_init=ones,
                     name="conv4")(x))
    x = nn.relu(conv(256, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=2, bias_init=ones,
                     name="conv5")(x))
    x = _max_pool(x)  # 13 -> 6
    x = adaptive_avg_pool(x, 6)  # identity at 227 px; lets other resolutions reach fc6
    x = x.reshape((x.shape[0], -1))
    # Paper order: dropout on the *outputs* of the two hidden fully connected layers.
    x = nn.relu(dense(self.classifier_width, bias_init=ones, name="fc6")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(dense(self.classifier_width, bias_init=ones, name="fc7")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes, bias_init=zeros, name="fc8")(x)


# torchvision's ``features`` and ``classifier`` are Sequentials: a module's index counts the ReLUs, max-pools and
# dropouts before it. fc6 multiplies the flattened 6x6x256 map, which torchvision orders (C, H, W).
TORCHVISION_RULES = [
    *((f"conv{i}", f"features.{j}", None) for i, j in zip(range(1, 6), (0, 3, 6, 8, 10), strict=True)),
    ("fc6", "classifier.1", ("chw", 256, 6, 6)), ("fc7", "classifier.4", None), ("fc8", "classifier.6", None),
]

registry.register("alexnet", AlexNet, input_size=224,
                  reference="torchvision alexnet (single tower, Krizhevsky 2014), adaptive 6x6 pool",
                  torchvision_rules=TORCHVISION_RULES)
registry.register("alexnet_paper", AlexNetPaper, input_size=227,
                  reference="Krizhevsky et al. 2012: LRN, groups=2 on conv2/4/5, 227 px input")
