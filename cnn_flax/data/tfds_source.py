"""TFDS datasets, read as array_record data sources (`tfds.data_source`), which needs no TensorFlow.

Six are registered by name with their published per-channel figures and fixed splits (mnist, fashion_mnist,
cifar10, cifar100, imagenette, imagenet2012). Any other TFDS image-classification dataset loads by its TFDS
name (`oxford_flowers102`, `svhn_cropped`, `eurosat/rgb`, ...) through the TFDS catalogue: classes and class
names from its `label` ClassLabel feature, splits from its dataset info, image shape from its `image`
feature, and the per-channel mean/std of its training split computed once and cached (see `stats`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

from cnn_flax.data import datasets, stats
from cnn_flax.data.base import Dataset, DatasetNotPrepared
from cnn_flax.errors import UserError


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """What cnn_flax fixes for a well-known TFDS dataset instead of reading or computing it."""
  mean: tuple[float, ...]  # published per-channel figures, pixel units (0..255)
  std: tuple[float, ...]
  splits: Sequence[str] = ("train", "test")
  manual: str = ""  # how to fetch the files TFDS cannot download itself


_IMAGENET_MEAN, _IMAGENET_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
KNOWN = {
    "mnist": TfdsSpec((33.32,), (78.57,)),
    "fashion_mnist": TfdsSpec((72.94,), (90.02,)),
    "cifar10": TfdsSpec((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    "cifar100": TfdsSpec((129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
    "imagenette": TfdsSpec(_IMAGENET_MEAN, _IMAGENET_STD, ("train", "validation")),
    "imagenet2012": TfdsSpec(
        _IMAGENET_MEAN, _IMAGENET_STD, ("train", "validation"),
        manual="download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org "
               "into {data_dir}/downloads/manual/, then "),
}
CATALOGUE_DESCRIPTION = ("any prepared TFDS image-classification dataset by its TFDS name (e.g. oxford_flowers102, "
                         "svhn_cropped)")


def default_tfds_data_dir() -> str:
  """`$TFDS_DATA_DIR`, else ~/tensorflow_datasets (TFDS's own default)."""
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def knows(name: str) -> bool:
  """Whether TFDS has a builder for `name` ("dataset", "dataset/config", "dataset:version"); not whether it is
  prepared, nor whether it is an image-classification dataset (`load_tfds` says so)."""
  import tensorflow_datasets as tfds
  try:
    tfds.builder_cls(name.split("/")[0].split(":")[0])
  except ValueError:  # DatasetNotFoundError is one, and so is a name TFDS cannot parse
    return False
  return True


def _not_prepared(name: str, data_dir: str, manual: str) -> DatasetNotPrepared:
  return DatasetNotPrepared(
      f"dataset {name!r} is not prepared in {data_dir!r}; {manual}prepare it with "
      f"`tfds build {name} --file_format=array_record --data_dir={data_dir}`")


def _classification_features(name: str, features):
  """The `image` Image and `label` ClassLabel features, or a one-line UserError naming what is missing."""
  import tensorflow_datasets as tfds
  keys = list(features.keys()) if hasattr(features, "keys") else []
  image = features["image"] if "image" in keys else None
  label = features["label"] if "label" in keys else None
  missing = []
  if not isinstance(image, tfds.features.Image):
    missing.append("'image' Image feature")
  if not isinstance(label, tfds.features.ClassLabel):
    missing.append("'label' ClassLabel feature")
  if missing:
    raise UserError(f"TFDS dataset {name!r} is not an image-classification dataset cnn_flax can read: it has no "
                    f"{' and no '.join(missing)} (its features: {', '.join(keys) or type(features).__name__})")
  return image, label


def load_tfds(name: str, *, image_size: int = 0, data_dir: str = "", channels: int = 3,
              spec: TfdsSpec | None = None) -> Dataset:
  """Opens every split of the TFDS dataset `name` with `tfds.data_source(download=False)`: offline, at once.

  Args:
    name: the TFDS name, with an optional config and version ("eurosat/rgb", "cifar10:3.0.2").
    image_size: the side records are resized to; 0 = the dataset's own height, which datasets of varying
      image sizes do not have (a UserError).
    data_dir: the TFDS data dir ("" = `default_tfds_data_dir()`).
    channels: unused: records keep the dataset's channels and the pipeline converts them.
    spec: fixed figures and splits of a well-known dataset; None reads the splits from the dataset info and
      computes the training split's mean/std once (`stats.cached_split_stats`).

  Returns:
    The `Dataset`, with classes and class names from the `label` feature.

  Raises:
    UserError: TFDS does not know `name`, or the dataset lacks an image or a class-label feature;
      DatasetNotPrepared: it is not built as array_record in `data_dir` (the message gives the command).
  """
  del channels
  data_dir = data_dir or default_tfds_data_dir()
  import tensorflow_datasets as tfds  # its data sources decode with Pillow/OpenCV, not TensorFlow
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except tfds.core.DatasetNotFoundError:
    raise UserError(f"unknown dataset {name!r}; choose one of: {datasets.choices()}") from None
  except (ValueError, AssertionError) as e:  # a config or version TFDS does not have
    raise UserError(f"TFDS cannot open {name!r}: {str(e).strip().splitlines()[0]}") from None
  image, label = _classification_features(name, builder.info.features)
  if spec and spec.manual:
    manual = spec.manual.format(data_dir=data_dir)
  elif getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    manual = (f"it needs files downloaded by hand into {data_dir}/downloads/manual/ (see its page in the TFDS "
              f"catalogue), then ")
  else:
    manual = ""
  split_names = tuple(spec.splits) if spec else tuple(builder.info.splits)
  if not split_names:  # the dataset info lists splits once the dataset is built
    raise _not_prepared(name, data_dir, manual)
  splits = {}
  for split in split_names:
    try:
      splits[split] = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                       builder_kwargs={"file_format": "array_record"})
    except (KeyError, AssertionError, FileNotFoundError, ValueError):
      raise _not_prepared(name, data_dir, manual) from None
  height, _, image_channels = image.shape
  size = image_size or height
  if not size:
    raise UserError(f"dataset {name!r} has images of varying size; set config.dataset.image_size")
  if spec:
    mean, std = spec.mean, spec.std
  else:
    train = "train" if "train" in splits else split_names[0]
    mean, std = stats.cached_split_stats(splits[train], dataset=builder.info.full_name, split=train,
                                         prepared_dir=os.fspath(builder.data_dir))
  return Dataset(name=name, num_classes=label.num_classes, image_shape=(size, size, image_channels or 3),
                 mean=tuple(mean), std=tuple(std), splits=splits, class_names=tuple(label.names))


for _name, _spec in KNOWN.items():
  datasets.register(_name, functools.partial(load_tfds, _name, spec=_spec))
datasets.register_catalogue(datasets.Catalogue(CATALOGUE_DESCRIPTION, knows, load_tfds))
