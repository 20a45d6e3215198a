"""BatchNorm folded into the convolution before it, for inference: one convolution instead of two ops.

In evaluation a BatchNorm is an affine map per channel, y = s * (x - mean) + beta with s = scale / sqrt(var + eps),
so a convolution followed directly by it equals one convolution with kernel W * s (per output channel) and bias
(b - mean) * s + beta. Which BatchNorm follows which convolution is read off the model itself: an apply on
abstract inputs records every `nn.Conv` whose output is handed unchanged to an `nn.BatchNorm` (ConvBN units,
VGG's conv/bn pairs, the stems). Pre-activation BatchNorms (DenseNet's BN-ReLU-conv) have no convolution right
before them and stay as they are. The models are not edited: `folded_apply` runs the usual `apply` with method
interceptors that substitute the folded kernel, add the folded bias, and pass the folded BatchNorms through.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util


def conv_bn_pairs(model: nn.Module, variables: dict, example) -> list[tuple[tuple[str, ...], tuple[str, ...], float]]:
  """[(conv module path, BatchNorm module path, epsilon)] for every convolution followed directly by a BatchNorm."""
  outputs: dict[int, tuple[tuple[str, ...], Any]] = {}  # id -> (conv path, the output itself: kept alive, so no
  pairs = []  # later array can reuse its id)

  def record(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, nn.BatchNorm) and args and id(args[0]) in outputs:
      pairs.append((outputs[id(args[0])][0], tuple(module.path), float(module.epsilon)))
    y = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and isinstance(module, nn.Conv):
      outputs[id(y)] = (tuple(module.path), y)
    return y

  def trace(variables, x):
    with nn.intercept_methods(record):
      return model.apply(variables, x, train=False)

  jax.eval_shape(trace, variables, example)
  return pairs


def fold(variables: dict, pairs) -> tuple[dict, dict[tuple[str, ...], jax.Array]]:
  """(variables with each paired kernel scaled by its BatchNorm, {conv path: folded bias})."""
  params = traverse_util.flatten_dict(variables["params"])
  stats = traverse_util.flatten_dict(variables.get("batch_stats", {}))
  biases = {}
  for conv, bn, epsilon in pairs:
    s = params[bn + ("scale",)] / jnp.sqrt(stats[bn + ("var",)] + epsilon)
    params[conv + ("kernel",)] = params[conv + ("kernel",)] * s  # HWIO: the output channel is the last axis
    bias = params.get(conv + ("bias",), 0.0)
    biases[conv] = (bias - stats[bn + ("mean",)]) * s + params[bn + ("bias",)]
    if conv + ("bias",) in params:
      params[conv + ("bias",)] = jnp.zeros_like(params[conv + ("bias",)])  # now carried by the folded bias
  return {**variables, "params": traverse_util.unflatten_dict(params)}, biases


def folded_apply(model: nn.Module, pairs, folded_variables: dict, biases: dict, x) -> Any:
  """The model's eval-mode output, with every paired BatchNorm computed inside its convolution."""
  folded_bns = {bn for _, bn, _ in pairs}

  def substitute(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, nn.BatchNorm) and tuple(module.path) in folded_bns:
      # Already applied by the convolution before it; a BatchNorm that fuses the ReLU after it still owes that.
      return nn.relu(args[0]) if getattr(module, "relu", False) else args[0]
    y = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and isinstance(module, nn.Conv) and tuple(module.path) in biases:
      y = y + biases[tuple(module.path)].astype(y.dtype)
    return y

  with nn.intercept_methods(substitute):
    return model.apply(folded_variables, x, train=False)
