"""BatchNorm whose training pass runs in oneDNN on a CPU: Flax's `nn.BatchNorm`, its variables, its results (to float
rounding).

Once the convolutions run in oneDNN, BatchNorm is the largest part of a CNN's training step on a CPU: its
statistics, normalisation and gradient are memory-bound passes that XLA:CPU runs on one core, while oneDNN's
batch-normalisation primitive runs on all of them and reads the input and the gradient once for both of the
gradient's sums. `BatchNorm` is `nn.BatchNorm` plus one field, `relu` (a ReLU after it, which oneDNN applies in
the same pass). In training mode, float32, on a single CPU device (where `fastconv` sends convolutions to oneDNN
too), for channel counts oneDNN generates kernels for (multiples of the vector width; it runs generic loops, slower
than XLA, for the rest), it computes the statistics, the normalisation and their gradient in oneDNN; everywhere
else, and always in evaluation (running averages: a scale and a shift that XLA fuses into its neighbours), it is
Flax's own code.
The variables, their names, shapes and initialisers and the running-average update are Flax's, so checkpoints,
weight import and parameter counts do not change. `CNN_FLAX_ONEDNN_BATCHNORM=0` switches this path off alone (for
comparisons: `benchmarks/cpu_table.sh python3 onednn_bn`); `CNN_FLAX_ONEDNN=0` or `CNN_FLAX_FAST_CONV=0` switch
it off with the convolutions'.
"""
from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.models import fastconv, onednn


class BatchNorm(nn.BatchNorm):
  """`nn.BatchNorm` (same fields, same variables), then a ReLU if `relu`."""
  relu: bool = False

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    running = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    if running or not self._in_onednn(x, mask):
      # Flax's own method, unwrapped: called wrapped, it would count as a second BatchNorm call to whoever
      # intercepts module methods (the layer summary, the tests' settings census).
      y = _flax_call(self, x, use_running_average, mask=mask)
      return nn.relu(y) if self.relu else y
    channels = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), [channels])
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), [channels])
    scale = self.param("scale", self.scale_init, (channels,), self.param_dtype)
    bias = self.param("bias", self.bias_init, (channels,), self.param_dtype)
    y, mean, var = batch_norm(x, scale, bias, epsilon=self.epsilon, relu=self.relu)
    if not self.is_initializing():  # as Flax: initialisation leaves the running averages at their start
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y

  def _in_onednn(self, x, mask) -> bool:
    """The cases oneDNN's primitive computes as Flax does (float32 throughout, the last axis the features, a scale
    and a bias, no mask and no statistics across devices: `axis_name`) and faster: with generated kernels."""
    switched_off = os.environ.get("CNN_FLAX_ONEDNN_BATCHNORM", "1") == "0"
    return (fastconv.enabled() and not switched_off and x.ndim >= 2 and self.axis in (-1, x.ndim - 1)
            and self.use_scale and self.use_bias and mask is None and self.axis_name is None
            and x.dtype == jnp.float32 and self.dtype in (None, jnp.float32) and self.param_dtype == jnp.float32
            and onednn.applies(x) and onednn.batch_norm_has_kernels(_rows(x), x.shape[-1]))


_flax_call = nn.BatchNorm.__call__.__wrapped__


def batch_norm(x, scale, bias, *, epsilon: float, relu: bool = False):
  """(y, mean, var): `x` normalised over every axis but the last with its own mean and biased variance, scaled,
  shifted (and rectified), in oneDNN; the statistics carry no gradient (they feed the running averages)."""
  y, mean, var = _batch_norm(x, scale, bias, float(epsilon), bool(relu))
  return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


def _rows(x) -> int:
  return int(np.prod(x.shape[:-1]))


def _forward_call(x, scale, bias, epsilon, relu):
  channels = x.shape[-1]
  mask_bytes = onednn.relu_mask_bytes(_rows(x), channels) if relu else 1  # unused without the ReLU
  results = [jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((channels,), x.dtype),
             jax.ShapeDtypeStruct((channels,), x.dtype), jax.ShapeDtypeStruct((mask_bytes,), jnp.uint8)]
  return onednn.call("bn_forward", results, x, scale, bias, epsilon=np.float32(epsilon), relu=relu)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _batch_norm(x, scale, bias, epsilon, relu):
  y, mean, var, _ = _forward_call(x, scale, bias, epsilon, relu)
  return y, mean, var


def _batch_norm_forward(x, scale, bias, epsilon, relu):
  y, mean, var, mask = _forward_call(x, scale, bias, epsilon, relu)
  return (y, mean, var), (x, scale, mean, var, mask)


def _batch_norm_backward(epsilon, relu, residuals, cotangents):
  # The statistics' cotangents are zeros: `batch_norm`, the only caller, stops their gradient.
  x, scale, mean, var, mask = residuals
  dy = cotangents[0]
  channels = x.shape[-1]
  results = [jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((channels,), x.dtype),
             jax.ShapeDtypeStruct((channels,), x.dtype)]
  dx, dscale, dbias = onednn.call("bn_backward", results, x, dy, scale, mean, var, mask,
                                  epsilon=np.float32(epsilon), relu=relu)
  return dx, dscale, dbias


_batch_norm.defvjp(_batch_norm_forward, _batch_norm_backward)
