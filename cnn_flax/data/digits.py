"""The bundled `digits` dataset: the 1,797 8x8 UCI handwritten digits, with a fixed stratified split.

Vendored in `bundled/digits.npz` (see bundled/README.md), so it works offline and needs no preparation.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from cnn_flax.data import datasets, transforms
from cnn_flax.data.base import ArraySource, Dataset

BUNDLED_DIR = os.path.join(os.path.dirname(__file__), "bundled")


def digits_split_mask(labels: np.ndarray) -> np.ndarray:
  """True for test examples: within each class, in file order, every fifth example (ranks 4, 9, ...)."""
  test = np.zeros(len(labels), bool)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    test[members[4::5]] = True
  return test


@functools.lru_cache(maxsize=4)
def _digits_arrays(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  with np.load(os.path.join(BUNDLED_DIR, "digits.npz")) as f:
    images, labels = f["images"], f["labels"]
  pixels = np.round(images.astype(np.float32) * (255.0 / 16.0)).astype(np.uint8)
  if image_size != pixels.shape[1]:
    pixels = np.stack([transforms.resize(p[..., None], image_size, image_size) for p in pixels])
  else:
    pixels = pixels[..., None]
  return pixels, labels.astype(np.int32)


def load_digits(image_size: int = 0, data_dir: str = "", channels: int = 1) -> Dataset:
  """The digits at `image_size` pixels (0 = 32), one grey channel; splits `train` (1,442) and `test` (355).

  Args:
    image_size: side of the square images (bilinear resize of the 8x8 originals).
    data_dir: ignored (the data is bundled with the package).
    channels: ignored (the pipeline converts grey to the model's channels).

  Returns:
    The `Dataset`, with the mean/std of the training split computed from the arrays.
  """
  del data_dir, channels
  images, labels = _digits_arrays(image_size or 32)
  test = digits_split_mask(labels)
  train_images = images[~test]
  return Dataset(
      name="digits", num_classes=10, image_shape=images.shape[1:],
      mean=(float(train_images.mean()),), std=(float(train_images.std()),),
      splits={"train": ArraySource(train_images, labels[~test]), "test": ArraySource(images[test], labels[test])},
      class_names=tuple(str(i) for i in range(10)))


datasets.register("digits", load_digits)
