"""What every dataset source returns: a `Dataset` of random-access splits, and the errors of a missing one.

A split is a "data source" in the Grain / `tfds.data_source` sense: `len(source)` and `source[i]` returning
`{"image": uint8 array (H, W, C), "label": int}`. `ArraySource` is such a source over arrays in memory (or
memory-mapped), used by the bundled digits and by image folders.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cnn_flax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset's splits plus what the model and the normalisation need to know about it."""
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C) the pipeline gives the model (records are resized to it)
  mean: tuple[float, ...]  # per channel, in pixel units (0..255), of the training split
  std: tuple[float, ...]
  splits: dict[str, Any]  # split name -> random-access source
  class_names: tuple[str, ...]

  def split(self, name: str):
    """The random-access source of split `name`; a UserError listing the splits when there is none."""
    if name not in self.splits:
      raise UserError(f"dataset {self.name!r} has no split {name!r}; its splits are: {', '.join(self.splits)}")
    return self.splits[name]


class ArraySource:
  """A random-access source over in-memory arrays (the bundled data, or small datasets on the host)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    """`images`: uint8 (N, H, W, C), possibly memory-mapped; `labels`: N integer class indices."""
    assert images.dtype == np.uint8 and images.ndim == 4 and len(images) == len(labels)
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": self.images[index], "label": int(self.labels[index])}

  def __repr__(self) -> str:  # Grain puts sources in its checkpoint/debug output; keep it short
    return f"ArraySource(n={len(self)}, shape={self.images.shape[1:]})"


class DatasetNotPrepared(UserError):
  """A TFDS dataset is missing from the data dir; the message gives the command that prepares it."""
