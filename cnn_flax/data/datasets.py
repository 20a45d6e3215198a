"""The dataset registry: a name, a loader, and one record format for every dataset.

Each source module (`digits`, `folder`, `tfds_source`) registers its datasets on import, and
`cnn_flax/data/__init__.py` imports them all, so `from cnn_flax.data import datasets` sees every dataset.
Besides fixed names, a *catalogue* can claim names it knows: TFDS registers one, so any TFDS
image-classification dataset loads by its TFDS name without being listed here.

`Dataset`, `ArraySource` and `DatasetNotPrepared` live in `base` and are re-exported for callers.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

from cnn_flax.data.base import ArraySource, Dataset, DatasetNotPrepared
from cnn_flax.errors import UserError

__all__ = ["ArraySource", "Catalogue", "Dataset", "DatasetNotPrepared", "choices", "is_known", "load", "names",
           "register", "register_catalogue"]


class Loader(Protocol):
  def __call__(self, *, image_size: int, data_dir: str, channels: int) -> Dataset: ...


@dataclasses.dataclass(frozen=True)
class Catalogue:
  """Datasets an outside library knows by name (TFDS), loaded without registering each one."""
  description: str  # completes "choose one of: <names>, or ..." in error messages
  knows: Callable[[str], bool]  # whether `name` is in the catalogue (need not be prepared)
  load: Callable[..., Dataset]  # load(name, *, image_size, data_dir, channels)


_LOADERS: dict[str, Loader] = {}
_CATALOGUES: list[Catalogue] = []


def register(name: str, loader: Loader) -> None:
  """Makes `load(name, ...)` call `loader(image_size=..., data_dir=..., channels=...)`.

  Args:
    name: the dataset's name in configs (`config.dataset.name`); registering a name twice is an error.
    loader: returns the `Dataset`; it may ignore arguments that do not apply to it (the bundled digits ignore
      `data_dir`), and raises `UserError` (or `DatasetNotPrepared`) for data it cannot find or read.
  """
  if name in _LOADERS:
    raise ValueError(f"dataset {name!r} is registered twice")
  _LOADERS[name] = loader


def register_catalogue(catalogue: Catalogue) -> None:
  """Adds a catalogue consulted, in registration order, for names that no `register` call claimed."""
  _CATALOGUES.append(catalogue)


def names() -> list[str]:
  """The registered dataset names, sorted (catalogues such as TFDS come on top; see `choices`)."""
  return sorted(_LOADERS)


def choices() -> str:
  """What an error message offers instead of an unknown name: the registered names, then the catalogues."""
  return ", ".join(names()) + "".join(f", or {c.description}" for c in _CATALOGUES)


def is_known(name: str) -> bool:
  """Whether `load(name)` would find a loader: a registered name, or one a catalogue knows.

  Cheap for registered names; a catalogue may import its library (TFDS: about a second) to answer.
  """
  return name in _LOADERS or any(c.knows(name) for c in _CATALOGUES)


def load(name: str, image_size: int = 0, data_dir: str = "", channels: int = 3) -> Dataset:
  """Opens the dataset `name`.

  Args:
    name: a registered name (`names()`) or a name a catalogue knows (any TFDS image-classification dataset).
    image_size: the size records are resized to (0 = the dataset's own size; datasets of varying image
      sizes and image folders need it: callers pass the model's input size by default).
    data_dir: where the data lives (TFDS: the data dir, default `$TFDS_DATA_DIR` or ~/tensorflow_datasets;
      folders: ROOT); ignored by the bundled digits.
    channels: the colour channels image folders are converted to (their files may be in any mode); the
      other sources keep their own channels.

  Returns:
    The `Dataset`: splits of `{"image": uint8 HxWxC, "label": int}` records, classes, image shape, and the
    per-channel mean/std of its training split.

  Raises:
    UserError: an unknown name (the message lists the choices), or data that cannot be read;
      `DatasetNotPrepared` (a UserError) for a TFDS dataset not yet built in `data_dir`.
  """
  kwargs = dict(image_size=image_size, data_dir=data_dir, channels=channels)
  if name in _LOADERS:
    return _LOADERS[name](**kwargs)
  for catalogue in _CATALOGUES:
    if catalogue.knows(name):
      return catalogue.load(name, **kwargs)
  raise UserError(f"unknown dataset {name!r}; choose one of: {choices()}")
