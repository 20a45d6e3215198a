"""Dataset registry: every dataset is a set of random-access splits with one record format.

A split is a "data source" in the Grain / `tfds.data_source` sense: `len(source)` and `source[i]` returning
`{"image": uint8 array (H, W, C), "label": int}`. The bundled `digits` dataset is such a source built from a
vendored file; TFDS datasets are read with `tfds.data_source` (array_record), which needs no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Sequence

import numpy as np

from cnn_flax.data import transforms
from cnn_flax.errors import UserError

BUNDLED_DIR = os.path.join(os.path.dirname(__file__), "bundled")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset's splits plus what the model and the normalisation need to know about it."""
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C) of the records the sources return
  mean: tuple[float, ...]  # per channel, in pixel units (0..255), of the training split
  std: tuple[float, ...]
  splits: dict[str, Any]  # split name -> random-access source
  class_names: tuple[str, ...]

  def split(self, name: str):
    if name not in self.splits:
      raise UserError(f"dataset {self.name!r} has no split {name!r}; its splits are: {', '.join(self.splits)}")
    return self.splits[name]


class ArraySource:
  """A random-access source over in-memory arrays (the bundled data, or small datasets on the host)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    assert images.dtype == np.uint8 and images.ndim == 4 and len(images) == len(labels)
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": self.images[index], "label": int(self.labels[index])}

  def __repr__(self) -> str:  # Grain puts sources in its checkpoint/debug output; keep it short
    return f"ArraySource(n={len(self)}, shape={self.images.shape[1:]})"


# --- bundled digits -----------------------------------------------------------------------------

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


def load_digits(image_size: int, data_dir: str = "") -> Dataset:
  del data_dir  # bundled with the package
  images, labels = _digits_arrays(image_size or 32)
  test = digits_split_mask(labels)
  train_images = images[~test]
  return Dataset(
      name="digits", num_classes=10, image_shape=images.shape[1:],
      mean=(float(train_images.mean()),), std=(float(train_images.std()),),
      splits={"train": ArraySource(train_images, labels[~test]), "test": ArraySource(images[test], labels[test])},
      class_names=tuple(str(i) for i in range(10)))


# --- TFDS datasets (array_record, read without TensorFlow) --------------------------------------

class DatasetNotPrepared(UserError):
  """A TFDS dataset is missing from the data dir; the message gives the command that prepares it."""


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  tfds_name: str
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  splits: Sequence[str] = ("train", "test")
  manual: str = ""  # how to fetch the files TFDS cannot download itself


_IMAGENET_MEAN, _IMAGENET_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
TFDS_DATASETS = {
    "mnist": TfdsSpec("mnist", 10, (33.32,), (78.57,)),
    "fashion_mnist": TfdsSpec("fashion_mnist", 10, (72.94,), (90.02,)),
    "cifar10": TfdsSpec("cifar10", 10, (125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    "cifar100": TfdsSpec("cifar100", 100, (129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
    "imagenette": TfdsSpec("imagenette", 10, _IMAGENET_MEAN, _IMAGENET_STD, ("train", "validation")),
    "imagenet2012": TfdsSpec(
        "imagenet2012", 1000, _IMAGENET_MEAN, _IMAGENET_STD, ("train", "validation"),
        manual="download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org "
               "into {data_dir}/downloads/manual/, then "),
}


def default_tfds_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def load_tfds(name: str, image_size: int, data_dir: str = "") -> Dataset:
  """Opens every split with `tfds.data_source(download=False)`: a missing dataset fails at once, offline."""
  spec = TFDS_DATASETS[name]
  data_dir = data_dir or default_tfds_data_dir()
  import tensorflow_datasets as tfds  # its data sources decode with Pillow/OpenCV, not TensorFlow
  splits = {}
  for split in spec.splits:
    try:
      splits[split] = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir, download=False,
                                       builder_kwargs={"file_format": "array_record"})
    except (KeyError, AssertionError, FileNotFoundError, ValueError):
      manual = spec.manual.format(data_dir=data_dir)
      raise DatasetNotPrepared(
          f"dataset {name!r} is not prepared in {data_dir!r}; {manual}prepare it with "
          f"`tfds build {spec.tfds_name} --file_format=array_record --data_dir={data_dir}`") from None
  features = next(iter(splits.values())).dataset_info.features
  height, width, channels = features["image"].shape
  size = image_size or height
  if not size:
    raise UserError(f"dataset {name!r} has images of varying size; set config.dataset.image_size")
  return Dataset(name=name, num_classes=spec.num_classes, image_shape=(size, size, channels), mean=spec.mean,
                 std=spec.std, splits=splits, class_names=tuple(features["label"].names))


def names() -> list[str]:
  return sorted(["digits", "folder", *TFDS_DATASETS])


def load(name: str, image_size: int = 0, data_dir: str = "", channels: int = 3) -> Dataset:
  """The dataset `name` with records of `image_size` pixels (0 = the dataset's own size).

  `channels` matters only for image folders, whose files may be in any colour mode.
  """
  if name == "digits":
    return load_digits(image_size, data_dir)
  if name == "folder":
    from cnn_flax.data import folder
    return folder.load_folder(data_dir, image_size, channels)
  if name in TFDS_DATASETS:
    return load_tfds(name, image_size, data_dir)
  raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(names())}")
