"""Per-channel mean and std of a training split (pixel units 0..255), streamed, cached as JSON.

Images are read one at a time from a data source (or CHUNK at a time from an array), so a split is never
held in memory. Sums of pixel values and of their squares are accumulated as exact integers, so the figures
do not depend on the chunking or on the order of the reads, and every process of a multi-host run computes
the same ones (they become constants of the compiled step).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from typing import Any, Iterable

import numpy as np

from cnn_flax.errors import UserError

# A full decode pass over a large split (ImageNet-size JPEGs) takes hours on one core; 10,000 images at their
# stored size pin the per-channel mean to about 0.5 pixel units and take a minute or two, once.
MAX_EXAMPLES = 10_000
CHUNK = 256  # images of an array summed at once: bounded memory however large the split
CACHE_FILE = "cnn_flax_stats.json"
FORMAT = 1  # bump when the method changes, so caches written by the old one are recomputed


def channel_stats(blocks: Iterable[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel population mean and std over every pixel of `blocks` (uint8 arrays shaped (..., C)).

  Args:
    blocks: images or batches of images of any height and width, all with the same channels.

  Returns:
    (mean, std), each a tuple of C floats in pixel units.
  """
  total = squares = None
  count = 0
  for block in blocks:
    pixels = np.asarray(block, np.uint8).reshape(-1, block.shape[-1])
    if total is None:
      total, squares = np.zeros(pixels.shape[1], np.int64), np.zeros(pixels.shape[1], np.int64)
    total += pixels.sum(0, dtype=np.int64)
    wide = pixels.astype(np.uint16)  # 255 ** 2 fits in 16 bits: a 2-byte copy, not an 8-byte one
    squares += (wide * wide).sum(0, dtype=np.int64)
    count += len(pixels)
  if not count:
    raise ValueError("no pixels to compute statistics of")
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def array_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """`channel_stats` of an (N, H, W, C) uint8 array read CHUNK images at a time (memory-maps stay on disk)."""
  return channel_stats(images[start:start + CHUNK] for start in range(0, len(images), CHUNK))


def sample_indices(num_examples: int, max_examples: int | None = None) -> np.ndarray:
  """Every example when there are at most `max_examples` (None: MAX_EXAMPLES), else that many evenly spaced
  ones: i * N // K for i < K."""
  k = min(num_examples, MAX_EXAMPLES if max_examples is None else max_examples)
  return np.arange(k, dtype=np.int64) * num_examples // k


def source_stats(source, indices: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """`channel_stats` of the images of `source[i]` for i in `indices`, one decoded image in memory at a time."""
  return channel_stats(np.asarray(source[int(i)]["image"]) for i in indices)


def _read(path: str, expected: dict[str, Any]) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      cached = json.load(f)
  except (OSError, ValueError):
    return None
  return cached if all(cached.get(k) == v for k, v in expected.items()) else None


def _write(directory: str, contents: dict[str, Any]) -> str:
  """Writes CACHE_FILE into `directory` atomically (a crash or a concurrent writer leaves a whole file)."""
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".cnn_flax_stats-", dir=directory)
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(contents, f, indent=1)
    path = os.path.join(directory, CACHE_FILE)
    os.replace(tmp, path)
    return path
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def fallback_dir(prepared_dir: str) -> str:
  """~/.cache/cnn_flax/stats/<hash of the prepared dir>: where the cache goes when the data dir is read-only."""
  key = hashlib.sha256(os.path.abspath(prepared_dir).encode()).hexdigest()[:16]
  return os.path.join(os.path.expanduser("~/.cache/cnn_flax/stats"), key)


def cached_split_stats(source, *, dataset: str, split: str, prepared_dir: str,
                       max_examples: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """The per-channel mean/std of a split, from its cache file, or computed once and cached.

  The cache is CACHE_FILE in `prepared_dir` (the dataset's prepared directory) when that is writable,
  otherwise in `fallback_dir(prepared_dir)`; both are looked up. A cache is reused only when it describes the
  same dataset, split, number of examples and method; the file says in words how it was computed.

  Args:
    source: the split, a random-access source of `{"image": uint8 HxWxC, ...}` records.
    dataset: the dataset's full name and version (e.g. "oxford_flowers102/2.1.1"), recorded in the cache.
    split: the split's name, recorded in the cache.
    prepared_dir: the directory holding the prepared dataset.
    max_examples: the most examples decoded (`sample_indices`; None: MAX_EXAMPLES).

  Returns:
    (mean, std), each a tuple with one float per channel, in pixel units (0..255).
  """
  if not len(source):
    raise UserError(f"split {split!r} of {dataset} has no examples to compute the mean/std of")
  indices = sample_indices(len(source), max_examples)
  expected = {"format": FORMAT, "dataset": dataset, "split": split, "split_examples": len(source),
              "examples_used": len(indices)}
  directories = (prepared_dir, fallback_dir(prepared_dir))
  for directory in directories:
    cached = _read(os.path.join(directory, CACHE_FILE), expected)
    if cached:
      return tuple(cached["mean"]), tuple(cached["std"])
  print(f"computing the per-channel mean/std of {dataset} {split} from {len(indices)} of its {len(source)} "
        f"images (once; cached as {CACHE_FILE})", file=sys.stderr, flush=True)
  mean, std = source_stats(source, indices)
  every = "every example" if len(indices) == len(source) else f"{len(indices)} evenly spaced examples (i * N // K)"
  contents = {**expected, "mean": mean, "std": std, "how": (
      f"population mean and standard deviation per channel, in pixel units 0..255, over every pixel of {every} "
      f"of the {len(source)} in split {split!r}, decoded at their stored size (before any resizing), by cnn_flax")}
  for directory in directories:
    # A prepared directory that does not exist is not ours to create: TFDS owns the data dir's layout.
    if directory == prepared_dir and not (os.path.isdir(directory) and os.access(directory, os.W_OK)):
      continue
    try:
      _write(directory, contents)
      break
    except OSError:  # read-only file system, quota, a permission os.access did not foresee: try the next place
      continue
  return mean, std
