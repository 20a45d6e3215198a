"""The model registry: one name, one constructor, one uniform interface.

Every registered constructor returns a Flax Linen module whose ``__call__(x, train: bool)`` takes NHWC
float images and returns logits (GoogLeNet in training returns a dict with auxiliary logits as well).

A registration may also carry the model's weight mapping for ``cnn_flax.convert``: each family states, next to
the modules it names, which torchvision or Keras layer every Flax module comes from (``torchvision_rules``,
``keras``), and ``convert`` holds only the engine that applies such tables. The tables are data (regular
expressions and layout notes), so this module imports nothing from ``convert``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn

from cnn_flax.errors import UserError

# One rule of a weight mapping: (regular expression over the Flax module path joined by '/', source layer name as
# a ``re.Match.expand`` template or a function of the match, layout note). The first rule that matches the whole
# path wins. Layout notes: None (the default layout), ("chw", C, H, W) (a dense layer after a flatten whose rows
# the source orders (C, H, W)), "depthwise" (a Keras depthwise kernel (H, W, C, 1)), "squeeze" (a Keras 1x1 conv
# standing in for a dense layer).
Rule = tuple[str, str | Callable[[Any], str], Any]
# A static table, or a function of the model instance that builds it (VGG's indices depend on its stages).
Rules = Sequence[Rule] | Callable[[nn.Module], Sequence[Rule]]


@dataclasses.dataclass(frozen=True)
class KerasMapping:
  """How ``keras.applications`` weights map onto a registered model.

  ``applications``: Keras application names, lower case (``"resnet50"``), that build this model.
  ``rules``: Flax module path -> Keras layer name (see ``Rule``).
  ``epsilon``: Keras's BatchNorm epsilon in these applications, used when only arrays are given (a Keras Model
  reports each layer's own); ``None`` for models without BatchNorm.
  ``head``: the Keras classifier layer; its last kernel axis gives ``num_classes``.
  ``overrides``: model fields read off the weights, ``{layer name: arrays} -> {field: value}`` (e.g. the
  classifier width, a width multiplier, an activation), besides ``num_classes``.
  """
  applications: tuple[str, ...]
  rules: Sequence[Rule]
  epsilon: float | None = None
  head: str = "predictions"
  overrides: Callable[[Mapping[str, Sequence[Any]]], dict[str, Any]] = lambda arrays: {}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What the rest of the project needs to know about a registered model."""
  name: str
  constructor: Callable[..., nn.Module]
  input_size: int  # the resolution of the reference (e.g. 224, 32)
  in_channels: int  # channels of the reference input (3, or 1 for LeNet)
  reference: str  # which paper / library the defaults follow
  torchvision_rules: Rules | None = None  # Flax module path -> torchvision state-dict prefix; None: no import
  keras: KerasMapping | None = None  # None: no Keras import


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, constructor: Callable[..., nn.Module], *, input_size: int, in_channels: int = 3,
             reference: str, torchvision_rules: Rules | None = None, keras: KerasMapping | None = None) -> None:
  """Adds a model to the registry.

  Args:
    name: the name ``create`` and the configs use; registering a name twice is a bug (``ValueError``).
    constructor: called as ``constructor(num_classes=..., **overrides)``; returns the Flax module.
    input_size: the resolution of the reference input.
    in_channels: channels of the reference input.
    reference: the paper or library whose defaults the model follows.
    torchvision_rules: where a torchvision state dict of the same architecture has each module's arrays
      (``cnn_flax.convert.from_torchvision``); a table of ``Rule`` or a function of the model instance.
    keras: how ``keras.applications`` weights map onto the model (``cnn_flax.convert.from_keras``).
  """
  if name in _REGISTRY:
    raise ValueError(f"model {name!r} is registered twice")
  _REGISTRY[name] = ModelInfo(name, constructor, input_size, in_channels, reference, torchvision_rules, keras)


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_REGISTRY)


def info(name: str) -> ModelInfo:
  """The registration of ``name``; raises ``UserError`` listing the registered names if there is none."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise UserError(f"unknown model {name!r}; choose one of: {', '.join(names())}") from None


def create(name: str, num_classes: int, **overrides: Any) -> nn.Module:
  """Builds the registered model ``name``.

  Args:
    name: a registered name (``names()``).
    num_classes: the classifier's outputs.
    **overrides: module fields, e.g. ``dtype=jnp.bfloat16``, ``width_multiplier=0.5`` (MobileNet),
      ``plain=True`` (ResNet), ``bn_epsilon=1e-3``.
  Returns:
    A Flax Linen module whose ``__call__(x, train: bool)`` takes NHWC float images and returns logits (GoogLeNet
    in training: ``{"logits": ..., "aux_logits": (...)}``).
  Raises:
    UserError: an unknown name (the message lists the registered ones) or a field the model does not have.
  """
  constructor = info(name).constructor
  try:
    return constructor(num_classes=num_classes, **overrides)
  except TypeError as e:
    raise UserError(f"model {name!r} does not accept the overrides {sorted(overrides)}: {e}") from None
