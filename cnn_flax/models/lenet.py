"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document recognition").

Two variants, both for 32x32 single-channel inputs:

* ``lenet5``: the modern reading found in most textbooks and libraries: C3 sees all six S2 maps, ReLU,
  max pooling, dense 120-84-classes. 61,706 parameters for 10 classes.
* ``lenet5_paper``: the 1998 network as published: C3 follows the paper's partial connection table
  (Table I), S2/S4 are trainable subsampling layers (sum of a 2x2 window times a per-map coefficient plus a
  per-map bias), and the squashing function is the scaled tanh 1.7159 tanh(2x/3). Up to F6 it holds exactly the
  paper's 60,000 trainable parameters (C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164).
  Stated deviation: the paper's output layer is a set of Euclidean RBF units with fixed, hand-drawn 7x12
  prototypes; here it is a trainable dense 84->classes layer (850 more parameters for 10 classes) so that the
  model trains with the same cross-entropy loss as every other model in the zoo.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.models import registry
from cnn_flax.models.layers import Conv, max_pool

# Table I of the paper: which S2 maps (rows) feed each of the 16 C3 maps (columns).
C3_CONNECTIONS = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


def scaled_tanh(x):
  """The paper's squashing function f(a) = A tanh(S a) with A = 1.7159 and S = 2/3."""
  return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


class LeNet5(nn.Module):
  """The modern LeNet-5: conv6-pool-conv16-pool-fc120-fc84-fc(num_classes), ReLU."""
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout or batch norm
    conv = functools.partial(Conv, kernel_size=(5, 5), padding="VALID", dtype=self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    x = nn.relu(conv(6, name="c1")(x))
    x = max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(conv(16, name="c3")(x))
    x = max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(dense(120, name="f5")(x))
    x = nn.relu(dense(84, name="f6")(x))
    return dense(self.num_classes, name="output")(x)


class TrainableSubsampling(nn.Module):
  """S2/S4 of the paper: each map's 2x2 window sum times a trainable coefficient, plus a trainable bias."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    coefficient = self.param("coefficient", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    window_sum = nn.avg_pool(x, (2, 2), strides=(2, 2)) * 4.0
    return window_sum * coefficient.astype(self.dtype) + bias.astype(self.dtype)


class PartialConv(nn.Module):
  """C3: a 5x5 convolution in which output map j sees only the input maps listed in ``connections[j]``.

  Only the connected weights are parameters (a packed vector); the dense kernel is rebuilt from them with
  zeros elsewhere, so the trainable count is exactly 25 * (number of connections) + number of maps.
  """
  connections: tuple[tuple[int, ...], ...]
  in_features: int
  kernel_size: int = 5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if x.shape[-1] != self.in_features:
      raise ValueError(f"PartialConv expects {self.in_features} input maps, got {x.shape[-1]}")
    rows = np.array([i for targets in self.connections for i in targets])
    cols = np.array([j for j, targets in enumerate(self.connections) for _ in targets])
    k = self.kernel_size
    fan_in = np.array([len(self.connections[j]) for j in cols]) * k * k
    # LeCun-style init scaled by each output map's own fan-in.
    def init(key, shape):
      return nn.initializers.normal(1.0)(key, shape) / np.sqrt(fan_in)
    packed = self.param("kernel", init, (k, k, len(rows)))
    bias = self.param("bias", nn.initializers.zeros, (len(self.connections),))
    kernel = jnp.zeros((k, k, self.in_features, len(self.connections)), packed.dtype)
    kernel = kernel.at[:, :, rows, cols].set(packed)
    y = jax.lax.conv_general_dilated(jnp.asarray(x, self.dtype), kernel.astype(self.dtype), (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(self.dtype)


class LeNet5Paper(nn.Module):
  """LeNet-5 as published in 1998 (partial C3, trainable subsampling, scaled tanh); dense output layer."""
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = scaled_tanh(Conv(6, (5, 5), padding="VALID", dtype=self.dtype, name="c1")(x))
    x = scaled_tanh(TrainableSubsampling(dtype=self.dtype, name="s2")(x))
    x = scaled_tanh(PartialConv(C3_CONNECTIONS, in_features=6, dtype=self.dtype, name="c3")(x))
    x = scaled_tanh(TrainableSubsampling(dtype=self.dtype, name="s4")(x))
    x = scaled_tanh(Conv(120, (5, 5), padding="VALID", dtype=self.dtype, name="c5")(x))
    x = x.reshape((x.shape[0], -1))
    x = scaled_tanh(nn.Dense(84, dtype=self.dtype, name="f6")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="output")(x)


registry.register("lenet5", LeNet5, input_size=32, in_channels=1,
                  reference="modern LeNet-5 (LeCun et al. 1998 with full C3, ReLU, max pooling)")
registry.register("lenet5_paper", LeNet5Paper, input_size=32, in_channels=1,
                  reference="LeCun et al. 1998, Table I connections; dense output instead of RBF")
