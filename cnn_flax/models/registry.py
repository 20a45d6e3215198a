"""The model registry: one name, one constructor, one uniform interface.

Every registered constructor returns a Flax Linen module whose ``__call__(x, train: bool)`` takes NHWC
float images and returns logits (GoogLeNet in training returns a dict with auxiliary logits as well).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from cnn_flax.errors import UserError


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What the rest of the project needs to know about a registered model."""
  name: str
  constructor: Callable[..., nn.Module]
  input_size: int  # the resolution of the reference (e.g. 224, 32)
  in_channels: int  # channels of the reference input (3, or 1 for LeNet)
  reference: str  # which paper / library the defaults follow


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str, constructor: Callable[..., nn.Module], *, input_size: int, in_channels: int = 3,
             reference: str) -> None:
  if name in _REGISTRY:
    raise ValueError(f"model {name!r} is registered twice")
  _REGISTRY[name] = ModelInfo(name, constructor, input_size, in_channels, reference)


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_REGISTRY)


def info(name: str) -> ModelInfo:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise UserError(f"unknown model {name!r}; choose one of: {', '.join(names())}") from None


def create(name: str, num_classes: int, **overrides: Any) -> nn.Module:
  """Builds the registered model ``name`` with ``num_classes`` outputs; ``overrides`` set module fields."""
  constructor = info(name).constructor
  try:
    return constructor(num_classes=num_classes, **overrides)
  except TypeError as e:
    raise UserError(f"model {name!r} does not accept the overrides {sorted(overrides)}: {e}") from None
