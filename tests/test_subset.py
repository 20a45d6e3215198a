"""dataset.train_fraction: a class-stratified subset of the training split, the same for every run seed."""
import numpy as np
import pytest

from cnn_flax import experiment
from cnn_flax.data import subset
from cnn_flax.data.base import ArraySource


def test_every_class_keeps_its_share():
  labels = np.repeat(np.arange(4), [100, 40, 10, 1])  # unbalanced, one class with a single example
  indices = subset.stratified_indices(labels, 0.25)
  kept = np.bincount(labels[indices], minlength=4)
  assert kept.tolist() == [25, 10, 2, 1]  # round(0.25 n), at least one
  assert len(np.unique(indices)) == len(indices) and np.all(np.diff(indices) > 0)


def test_the_subset_is_fixed_and_independent_of_the_run_seed(tiny_config):
  labels = np.repeat(np.arange(10), 50)
  first, again = subset.stratified_indices(labels, 0.1), subset.stratified_indices(labels, 0.1)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, subset.stratified_indices(labels, 0.1, seed=1))  # the seed matters ...
  full_counts = np.bincount(np.asarray(experiment.build(tiny_config).dataset.split("train").labels))
  tiny_config.dataset.train_fraction = 0.1
  splits = []
  for seed in (0, 3):  # ... but a run's seed does not choose the examples
    tiny_config.seed = seed
    train = experiment.build(tiny_config).dataset.split("train")
    splits.append(np.asarray(train.labels))
  np.testing.assert_array_equal(splits[0], splits[1])
  assert np.bincount(splits[0]).tolist() == [max(1, round(0.1 * n)) for n in full_counts]


def test_the_subset_is_made_of_the_full_splits_examples(tiny_config):
  full = experiment.build(tiny_config).dataset.split("train")
  tiny_config.dataset.train_fraction = 0.5
  exp = experiment.build(tiny_config)
  part = exp.dataset.split("train")
  indices = subset.stratified_indices(np.asarray(full.labels), 0.5)
  np.testing.assert_array_equal(part.images, full.images[indices])
  assert exp.steps_per_epoch == len(part) // tiny_config.batch_size
  assert len(exp.dataset.split("test")) == 355  # evaluation keeps the whole test split


def test_sources_without_label_arrays_are_read_record_by_record():
  images = np.arange(6 * 2 * 2 * 1, dtype=np.uint8).reshape(6, 2, 2, 1)

  class Records:  # like a TFDS data source: records only
    def __len__(self):
      return 6

    def __getitem__(self, i):
      return {"image": images[i], "label": i % 2}

  data = subset.Dataset("toy", 2, (2, 2, 1), (0.0,), (1.0,), {"train": Records()}, ("a", "b"))
  cut = subset.with_train_fraction(data, "train", 0.5)
  part = cut.split("train")
  assert isinstance(part, subset.SubsetSource) and len(part) == 4  # round(1.5) = 2 per class
  assert sorted(part[i]["label"] for i in range(4)) == [0, 0, 1, 1]
  assert subset.with_train_fraction(data, "train", 1.0) is data
  whole = subset.Dataset("toy", 2, (2, 2, 1), (0.0,), (1.0,), {"train": ArraySource(images, np.arange(6) % 2)}, ())
  assert isinstance(subset.with_train_fraction(whole, "train", 0.5).split("train"), ArraySource)


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_fractions_outside_0_1_are_refused(tiny_config, fraction):
  from cnn_flax import config as config_lib
  from cnn_flax.errors import UserError
  tiny_config.dataset.train_fraction = fraction
  with pytest.raises(UserError, match=r"config.dataset.train_fraction=.*must be in \(0, 1\]"):
    config_lib.validate(tiny_config)
