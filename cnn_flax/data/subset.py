"""A class-stratified, seed-fixed subset of a training split (`dataset.train_fraction`): the low-data regime.

On a small or easy dataset every architecture saturates and the differences a study looks for vanish; training
on a fraction of the examples separates them again. The subset keeps round(fraction x n_c) examples of every class
c (at least one), drawn with a fixed seed that does not depend on `config.seed`: every run of a sweep, whatever its
seed, trains on the same examples, so seeds measure initialisation and order noise only. The mean/std used for
normalisation stay those of the whole split.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cnn_flax.data.base import ArraySource, Dataset

SUBSET_SEED = 0  # fixed: the subset must not change with the run's seed


def labels_of(source) -> np.ndarray:
  """Every label of a split, without decoding images where the source keeps labels apart (arrays, folders)."""
  labels = getattr(source, "labels", None)
  if labels is not None:
    return np.asarray(labels)
  return np.asarray([int(source[i]["label"]) for i in range(len(source))])


def stratified_indices(labels: np.ndarray, fraction: float, seed: int = SUBSET_SEED) -> np.ndarray:
  """Sorted indices of round(fraction x n_c) examples (at least 1) of every class c, chosen at random by `seed`."""
  rng = np.random.default_rng(seed)
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    keep = max(1, int(round(fraction * len(members))))
    chosen.append(rng.permutation(members)[:keep])
  return np.sort(np.concatenate(chosen))


class SubsetSource:
  """Random access to the examples `indices` of `source`, in that order."""

  def __init__(self, source, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.source[int(self.indices[index])]

  def __repr__(self) -> str:
    return f"SubsetSource(n={len(self)} of {self.source!r})"


def with_train_fraction(dataset: Dataset, split: str, fraction: float) -> Dataset:
  """`dataset` with split `split` cut down to a stratified `fraction` of its examples (1.0: unchanged)."""
  if fraction >= 1.0:
    return dataset
  source = dataset.split(split)
  indices = stratified_indices(labels_of(source), fraction)
  if isinstance(source, ArraySource):  # stays an array source, which the on-device feed reads whole
    subset = ArraySource(np.asarray(source.images[indices]), np.asarray(source.labels)[indices])
  else:
    subset = SubsetSource(source, indices)
  return dataclasses.replace(dataset, splits={**dataset.splits, split: subset})
