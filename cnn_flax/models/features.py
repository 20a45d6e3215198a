"""Per-stage feature maps of any registered model ("VGG as a feature extractor").

A stage ends where the spatial resolution changes: the feature map of a stage is the last array seen at its
resolution, among the inputs and outputs of the model's top-level layers in call order (ResNet: stem,
layer1..layer4; VGG: the last conv before each pooling; GoogLeNet: 2nd LRN, 3b, 4e, 5b; DenseNet: each block's
concatenated output and the final norm). This works
for every family without per-model code, and the variables are the classifier's own, so pretrained or
converted weights extract features directly.
"""
from __future__ import annotations

import flax.linen as nn
import jax


def stage_features(model: nn.Module, variables, images: jax.Array, train: bool = False) -> list[jax.Array]:
  """The feature map at the end of every stage, from the highest resolution to the lowest.

  Args:
    model: a module from ``models.create``.
    variables: its variables (``{"params": ..., "batch_stats": ...}``), e.g. a checkpoint's or converted weights.
    images: NHWC float images, normalised as the model was trained.
    train: run in training mode (BatchNorm on batch statistics, dropout on with a fixed key).
  Returns:
    One NHWC array per resolution the network passes through (its last map at that resolution).
  """
  outputs: list[jax.Array] = []

  def record(next_fun, args, kwargs, context):
    top_level = context.method_name == "__call__" and len(context.module.path) == 1
    if top_level and args and getattr(args[0], "ndim", 0) == 4 and args[0] is not images:
      outputs.append(args[0])  # DenseNet: a transition's input is the block's concatenated output
    y = next_fun(*args, **kwargs)
    if top_level and getattr(y, "ndim", 0) == 4:
      outputs.append(y)
    return y

  with nn.intercept_methods(record):
    if train:
      model.apply(variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    else:
      model.apply(variables, images, train=False)
  stages: list[jax.Array] = []
  for y in outputs:
    if stages and stages[-1].shape[1:3] == y.shape[1:3]:
      stages[-1] = y  # same resolution: a later layer of the same stage
    else:
      stages.append(y)
  return stages
