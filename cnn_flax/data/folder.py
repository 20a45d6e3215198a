"""A user's own images as a dataset: ROOT/{train,test}/<class>/<image>, classes named by folder.

The first run converts each split once into an indexed on-disk form that later runs memory-map: `images.npy`
(uint8, N x H x W x C at the size and channels the model takes) and `labels.npy`. Classes come from the folder
names, and the per-channel mean/std from the memory-mapped training images at every load. The cache sits in
ROOT/.cnn_flax_cache/ (or, when ROOT is not writable, in ~/.cache/cnn_flax/folders/) under a name that encodes
the size, the channels and a fingerprint of the file list, so adding, removing or changing an image triggers a
fresh conversion. Conversion writes to a temporary directory and renames it at the end: an interrupted
conversion leaves no half cache behind.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import numpy as np

from cnn_flax.data import datasets, stats, transforms
from cnn_flax.data.base import ArraySource, Dataset
from cnn_flax.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "validation", "test")


def _list_split(root: str, split: str, classes: list[str]) -> list[tuple[str, int]]:
  files = []
  for label, name in enumerate(classes):
    class_dir = os.path.join(root, split, name)
    if not os.path.isdir(class_dir):
      continue
    for file in sorted(os.listdir(class_dir)):
      if file.lower().endswith(IMAGE_EXTENSIONS):
        files.append((os.path.join(class_dir, file), label))
  return files


def _fingerprint(files: list[tuple[str, int]], size: int, channels: int) -> str:
  digest = hashlib.sha256(f"{size}x{channels}".encode())
  for path, label in files:
    stat = os.stat(path)
    digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:16]


def _cache_root(root: str) -> str:
  local = os.path.join(root, ".cnn_flax_cache")
  if os.access(root, os.W_OK):
    return local
  key = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:16]
  return os.path.join(os.path.expanduser("~/.cache/cnn_flax/folders"), key)


def _convert(files: list[tuple[str, int]], size: int, channels: int, target: str) -> None:
  from PIL import Image, UnidentifiedImageError
  os.makedirs(os.path.dirname(target), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(target))
  try:
    images = np.lib.format.open_memmap(os.path.join(tmp, "images.npy"), mode="w+", dtype=np.uint8,
                                       shape=(len(files), size, size, channels))
    for i, (path, _) in enumerate(files):
      try:
        with Image.open(path) as pil:
          pil = pil.convert("L" if channels == 1 else "RGB")
          array = np.asarray(pil)
      except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"cannot read image {path!r} ({e}); remove or replace the file") from None
      images[i] = transforms.match_channels(transforms.resize(transforms.match_channels(array, channels), size,
                                                              size), channels)
    images.flush()
    del images
    np.save(os.path.join(tmp, "labels.npy"), np.array([label for _, label in files], np.int32))
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def load_folder(root: str, image_size: int, channels: int = 3) -> Dataset:
  """The image folder ROOT as a dataset, converted once to memory-mapped arrays (see the module docstring).

  Args:
    root: the folder holding train/<class>/<image> (and optionally validation/ and test/ alike).
    image_size: the side every image is resized to (required: the files may have any size).
    channels: 1 (grey) or 3 (RGB); every file is converted to it.

  Returns:
    The `Dataset`: one split per split folder with images, classes named by the train/ subfolders (sorted),
    and the per-channel mean/std of the converted training images.
  """
  if not root:
    raise UserError("the folder dataset needs its root: --config.dataset.data_dir=ROOT with "
                    "ROOT/train/<class>/<image> (and ROOT/test/...)")
  if not os.path.isdir(os.path.join(root, "train")):
    raise UserError(f"no {os.path.join(root, 'train')!r} directory; a folder dataset is laid out as "
                    f"ROOT/train/<class>/<image> and ROOT/test/<class>/<image>")
  if not image_size:
    raise UserError("set config.dataset.image_size for a folder dataset (images are resized to it)")
  classes = sorted(d for d in os.listdir(os.path.join(root, "train"))
                   if os.path.isdir(os.path.join(root, "train", d)) and not d.startswith("."))
  if not classes:
    raise UserError(f"{os.path.join(root, 'train')!r} has no class folders; put images in train/<class>/")
  cache = _cache_root(root)
  splits = {}
  for split in SPLITS:
    files = _list_split(root, split, classes)
    if not files:
      continue
    fingerprint = _fingerprint(files, image_size, channels)
    target = os.path.join(cache, f"{split}-{image_size}x{image_size}x{channels}-{fingerprint}")
    if not os.path.exists(os.path.join(target, "labels.npy")):
      _convert(files, image_size, channels, target)
    splits[split] = ArraySource(np.load(os.path.join(target, "images.npy"), mmap_mode="r"),
                                np.load(os.path.join(target, "labels.npy")))
  if "train" not in splits:
    raise UserError(f"no images found under {os.path.join(root, 'train')!r} (extensions: "
                    f"{', '.join(IMAGE_EXTENSIONS)})")
  mean, std = stats.array_stats(splits["train"].images)
  return Dataset(name="folder", num_classes=len(classes), image_shape=(image_size, image_size, channels),
                 mean=mean, std=std, splits=splits, class_names=tuple(classes))


def _load(*, image_size: int, data_dir: str, channels: int) -> Dataset:
  return load_folder(data_dir, image_size, channels)


datasets.register("folder", _load)
