"""Bundled digits, the Grain training iterator and the padded evaluation batches."""
import grain
import numpy as np
import pytest

from cnn_flax.data import datasets, pipeline
from cnn_flax.data.digits import digits_split_mask
from cnn_flax.errors import UserError


@pytest.fixture(scope="module")
def digits():
  return datasets.load("digits", 32)


def test_digits_split_is_fixed_and_stratified(digits):
  train, test = digits.splits["train"], digits.splits["test"]
  assert (len(train), len(test)) == (1442, 355)
  labels = np.array([0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
  # Within each class, in file order, ranks 4, 9, ... are test examples.
  np.testing.assert_array_equal(np.flatnonzero(digits_split_mask(labels)), [5, 11])
  per_class_all = np.bincount(np.concatenate([train.labels, test.labels]))
  np.testing.assert_array_equal(np.bincount(test.labels), per_class_all // 5)
  assert digits.image_shape == (32, 32, 1) and train[0]["image"].dtype == np.uint8


def test_digits_resize_follows_the_requested_size():
  assert datasets.load("digits", 8).splits["train"][0]["image"].shape == (8, 8, 1)
  assert datasets.load("digits", 48).image_shape == (48, 48, 1)


def test_unknown_dataset_and_split_are_user_errors(digits):
  with pytest.raises(UserError, match="unknown dataset 'nope'"):
    datasets.load("nope")
  with pytest.raises(UserError, match="no split 'validation'"):
    digits.split("validation")


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(UserError) as e:
    datasets.load("cifar10", data_dir=str(tmp_path))
  message = str(e.value)
  assert "tfds build cifar10 --file_format=array_record" in message and str(tmp_path) in message


def _iterator(digits, seed, **kw):
  return pipeline.train_iterator(digits.splits["train"], image_shape=digits.image_shape, local_batch_size=32,
                                 seed=seed, **kw)


def test_training_batches_depend_only_on_the_seed(digits):
  a, b, c = _iterator(digits, 0), _iterator(digits, 0), _iterator(digits, 1)
  for _ in range(3):
    x, y, z = next(a), next(b), next(c)
    np.testing.assert_array_equal(x["image"], y["image"])
  assert not np.array_equal(x["label"], z["label"])
  assert x["image"].shape == (32, 32, 32, 1) and x["image"].dtype == np.uint8


def test_each_epoch_is_a_new_permutation_of_the_split(digits):
  n = len(digits.splits["train"])
  it = pipeline.train_iterator(digits.splits["train"], image_shape=digits.image_shape, local_batch_size=n, seed=0)
  first, second = next(it)["label"], next(it)["label"]
  np.testing.assert_array_equal(np.sort(first), np.sort(digits.splits["train"].labels))
  assert not np.array_equal(first, second)


def test_processes_read_disjoint_slices_of_the_same_global_batches():
  images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
  source = datasets.ArraySource(images, np.arange(40))
  single = pipeline.train_iterator(source, image_shape=(1, 1, 1), local_batch_size=20, seed=0)
  slices = [pipeline.train_iterator(source, image_shape=(1, 1, 1), local_batch_size=10, seed=0, process_index=p,
                                    process_count=2) for p in range(2)]
  for _ in range(3):  # several global batches, across an epoch boundary
    expected = next(single)["label"]
    parts = [next(it)["label"] for it in slices]
    assert not set(parts[0]) & set(parts[1])
    np.testing.assert_array_equal(np.concatenate(parts), expected)


def test_iterator_state_round_trip_resumes_exactly(digits, tmp_path):
  it = _iterator(digits, 3)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it)["label"] for _ in range(3)]
  fresh = _iterator(digits, 3)
  fresh.set_state(state)
  np.testing.assert_array_equal(np.stack(expected), np.stack([next(fresh)["label"] for _ in range(3)]))
  assert isinstance(it, grain.DatasetIterator)


@pytest.mark.parametrize("n, batch, processes", [(355, 64, 1), (355, 64, 2), (7, 4, 2), (64, 64, 1)])
def test_eval_batches_count_every_example_exactly_once(n, batch, processes):
  images = np.zeros((n, 2, 2, 1), np.uint8)
  source = datasets.ArraySource(images, np.arange(n))
  labels = []
  for p in range(processes):
    for b in pipeline.eval_batches(source, image_shape=(2, 2, 1), global_batch_size=batch, process_index=p,
                                   process_count=processes):
      assert b["image"].shape[0] == batch // processes
      labels.extend(b["label"][b["mask"]].tolist())
  assert sorted(labels) == list(range(n))


def test_pipeline_resizes_records_of_another_size():
  source = datasets.ArraySource(np.full((3, 8, 8, 1), 200, np.uint8), np.arange(3))
  batch = next(pipeline.eval_batches(source, image_shape=(16, 16, 1), global_batch_size=4))
  assert batch["image"].shape == (4, 16, 16, 1) and batch["image"][0].min() == 200


@pytest.mark.parametrize("processes", [1, 2])
def test_index_feed_walks_the_record_feeds_order(processes):
  n = 103  # not a multiple of the batch: global batches straddle epoch boundaries
  source = datasets.ArraySource(np.zeros((n, 1, 1, 1), np.uint8), np.arange(n))
  records = pipeline.train_iterator(source, image_shape=(1, 1, 1), local_batch_size=20, seed=3)
  indices = [pipeline.index_iterator(n, local_batch_size=20 // processes, seed=3, process_index=p,
                                     process_count=processes) for p in range(processes)]
  for _ in range(12):
    np.testing.assert_array_equal(np.concatenate([next(it)["index"] for it in indices]), next(records)["label"])


def test_index_feed_state_round_trip():
  it = pipeline.index_iterator(103, local_batch_size=20, seed=3)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = next(it)["index"]
  fresh = pipeline.index_iterator(103, local_batch_size=20, seed=3)
  fresh.set_state(state)
  np.testing.assert_array_equal(next(fresh)["index"], expected)
