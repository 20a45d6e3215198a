"""Any TFDS image-classification dataset by name, and the cached per-channel statistics of its training split.

The datasets are mocked without network or TensorFlow: a real `dataset_info.json` (features from the TFDS
code, split sizes set here) is written into a temporary data dir, and `tfds.testing.mock_data` with
`MockPolicy.USE_FILES` generates the records. (`USE_CODE` mocks know no splits, and splits are what a
generic dataset is read by.)
"""
import json
import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnn_flax import trainer
from cnn_flax.data import datasets, stats
from cnn_flax.errors import UserError

SPLITS = {"oxford_flowers102": ("train", "validation", "test"), "svhn_cropped": ("train", "test", "extra")}
NUM_EXAMPLES = 40


def _prepare_metadata(data_dir, name):
  """What `tfds build` leaves besides the records: the dataset info, with split sizes; returns its directory."""
  builder = tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[NUM_EXAMPLES], num_bytes=0, filename_template=None)
      for s in SPLITS[name]]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)
  return str(builder.data_dir)


@pytest.fixture
def prepared(tmp_path, monkeypatch):
  """(data_dir, {name: prepared directory}) of the mocked datasets; HOME (hence ~/.cache) in tmp_path."""
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  data_dir = tmp_path / "tfds"
  dirs = {name: _prepare_metadata(data_dir, name) for name in SPLITS}
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(data_dir)):
    yield str(data_dir), dirs


def _numpy_stats(source, indices):
  pixels = np.concatenate([np.asarray(source[int(i)]["image"]).reshape(-1, 3) for i in indices]).astype(np.float64)
  return pixels.mean(0), pixels.std(0)


@pytest.mark.parametrize("name, image_size, shape, classes, first_names", [
    ("oxford_flowers102", 48, (48, 48, 3), 102, ("pink primrose", "hard-leaved pocket orchid")),
    ("svhn_cropped", 0, (32, 32, 3), 10, ("0", "1")),
])
def test_generic_tfds_dataset_by_its_name(prepared, name, image_size, shape, classes, first_names):
  data_dir, _ = prepared
  dataset = datasets.load(name, image_size=image_size, data_dir=data_dir)
  assert dataset.num_classes == classes and len(dataset.class_names) == classes
  assert dataset.class_names[:2] == first_names
  assert tuple(dataset.splits) == SPLITS[name] and len(dataset.split("test")) == NUM_EXAMPLES
  assert dataset.image_shape == shape and len(dataset.mean) == len(dataset.std) == 3
  record = dataset.split("train")[0]
  assert record["image"].dtype == np.uint8 and record["image"].shape[-1] == 3 and 0 <= record["label"] < classes
  assert "tensorflow.python" not in sys.modules


def test_varying_size_images_need_an_image_size(prepared):
  with pytest.raises(UserError, match="'oxford_flowers102' has images of varying size"):
    datasets.load("oxford_flowers102", data_dir=prepared[0])


@pytest.mark.parametrize("name", ["oxford_flowers102", "svhn_cropped"])
def test_computed_stats_are_numpys_over_the_training_split(prepared, name):
  data_dir, dirs = prepared
  dataset = datasets.load(name, image_size=32, data_dir=data_dir)
  train = dataset.split("train")
  mean, std = _numpy_stats(train, range(len(train)))
  np.testing.assert_allclose(dataset.mean, mean, rtol=1e-10)
  np.testing.assert_allclose(dataset.std, std, rtol=1e-10)
  with open(os.path.join(dirs[name], stats.CACHE_FILE)) as f:
    cached = json.load(f)
  assert cached["split"] == "train" and cached["examples_used"] == cached["split_examples"] == NUM_EXAMPLES
  assert "every example" in cached["how"] and cached["mean"] == list(dataset.mean)


def test_large_splits_use_evenly_spaced_examples(prepared, monkeypatch):
  monkeypatch.setattr(stats, "MAX_EXAMPLES", 7)
  data_dir, dirs = prepared
  dataset = datasets.load("oxford_flowers102", image_size=32, data_dir=data_dir)
  used = [0, 5, 11, 17, 22, 28, 34]  # i * 40 // 7
  np.testing.assert_array_equal(stats.sample_indices(NUM_EXAMPLES), used)
  mean, std = _numpy_stats(dataset.split("train"), used)
  np.testing.assert_allclose(dataset.mean, mean, rtol=1e-10)
  np.testing.assert_allclose(dataset.std, std, rtol=1e-10)
  all_mean, _ = _numpy_stats(dataset.split("train"), range(NUM_EXAMPLES))
  assert not np.allclose(dataset.mean, all_mean)  # the subset really was a subset
  with open(os.path.join(dirs["oxford_flowers102"], stats.CACHE_FILE)) as f:
    assert "7 evenly spaced examples" in json.load(f)["how"]


def _forbid_computing(monkeypatch):
  monkeypatch.setattr(stats, "source_stats", lambda *a: pytest.fail("statistics computed again"))


def test_stats_are_computed_once_then_read_from_the_cache(prepared, monkeypatch):
  data_dir, dirs = prepared
  first = datasets.load("svhn_cropped", data_dir=data_dir)
  path = os.path.join(dirs["svhn_cropped"], stats.CACHE_FILE)
  written = os.stat(path).st_mtime_ns
  _forbid_computing(monkeypatch)
  again = datasets.load("svhn_cropped", data_dir=data_dir)
  assert (again.mean, again.std) == (first.mean, first.std) and os.stat(path).st_mtime_ns == written
  assert not os.path.exists(os.path.expanduser("~/.cache/cnn_flax/stats"))


def test_read_only_data_dir_caches_under_home(prepared, monkeypatch):
  data_dir, dirs = prepared
  prepared_dir = dirs["svhn_cropped"]
  real_access = os.access
  # Tests may run as root, for whom chmod does not make a directory read-only; os.access is what is checked.
  monkeypatch.setattr(os, "access", lambda p, mode: False if os.path.samefile(p, prepared_dir) and mode & os.W_OK
                      else real_access(p, mode))
  first = datasets.load("svhn_cropped", data_dir=data_dir)
  assert not os.path.exists(os.path.join(prepared_dir, stats.CACHE_FILE))
  fallback = os.path.join(stats.fallback_dir(prepared_dir), stats.CACHE_FILE)
  assert fallback.startswith(os.environ["HOME"]) and os.path.exists(fallback)
  _forbid_computing(monkeypatch)
  assert datasets.load("svhn_cropped", data_dir=data_dir).mean == first.mean


def test_a_stale_cache_is_recomputed(prepared):
  data_dir, dirs = prepared
  path = os.path.join(dirs["svhn_cropped"], stats.CACHE_FILE)
  datasets.load("svhn_cropped", data_dir=data_dir)
  with open(path) as f:
    cached = json.load(f)
  with open(path, "w") as f:  # as if the dataset had been rebuilt with another number of examples
    json.dump({**cached, "split_examples": 1000, "mean": [0.0, 0.0, 0.0]}, f)
  assert datasets.load("svhn_cropped", data_dir=data_dir).mean == tuple(cached["mean"])


def test_unknown_name_lists_the_registered_datasets_and_tfds():
  assert datasets.is_known("svhn_cropped") and datasets.is_known("eurosat/rgb") and datasets.is_known("digits")
  assert not datasets.is_known("no_such_dataset")
  with pytest.raises(UserError) as e:
    datasets.load("no_such_dataset")
  message = str(e.value)
  assert message.startswith("unknown dataset 'no_such_dataset'; choose one of: cifar10, cifar100, digits")
  assert "any prepared TFDS image-classification dataset by its TFDS name" in message and "\n" not in message


@pytest.mark.parametrize("name, missing", [("imdb_reviews", "no 'image' Image feature (its features: text, label)"),
                                           ("binarized_mnist", "no 'label' ClassLabel feature (its features: image)")])
def test_a_dataset_without_image_and_label_is_a_one_line_error(tmp_path, name, missing):
  with pytest.raises(UserError) as e:  # from the TFDS code's features: no data, no mock needed
    datasets.load(name, image_size=32, data_dir=str(tmp_path))
  assert f"{name!r} is not an image-classification dataset" in str(e.value) and missing in str(e.value)
  assert "\n" not in str(e.value)


def test_unprepared_generic_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(datasets.DatasetNotPrepared) as e:
    datasets.load("oxford_flowers102", image_size=32, data_dir=str(tmp_path))
  assert str(e.value) == (f"dataset 'oxford_flowers102' is not prepared in {str(tmp_path)!r}; prepare it with "
                          f"`tfds build oxford_flowers102 --file_format=array_record --data_dir={tmp_path}`")


def test_training_on_a_generic_mocked_tfds_dataset(prepared, tiny_config, tmp_path):
  data_dir, dirs = prepared
  tiny_config.dataset.name = "oxford_flowers102"  # varying image sizes: resized to LeNet-5's 32 pixels
  tiny_config.dataset.data_dir = data_dir
  tiny_config.num_train_steps = 3
  summary = trainer.train_and_evaluate(tiny_config, str(tmp_path / "run"))
  assert summary["step"] == 3 and summary["eval/num_examples"] == NUM_EXAMPLES
  assert os.path.exists(os.path.join(dirs["oxford_flowers102"], stats.CACHE_FILE))
