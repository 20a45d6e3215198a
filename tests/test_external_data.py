"""TFDS datasets (mocked: no network, no TensorFlow) and image folders, down to a training run."""
import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from cnn_flax import trainer
from cnn_flax.data import datasets, pipeline
from cnn_flax.errors import UserError


@pytest.fixture
def mock_tfds():
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


@pytest.mark.parametrize("name, shape, classes", [("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10),
                                                  ("cifar100", (32, 32, 3), 100)])
def test_tfds_datasets_open_as_data_sources(mock_tfds, tmp_path, name, shape, classes):
  dataset = datasets.load(name, data_dir=str(tmp_path))
  assert dataset.image_shape == shape and dataset.num_classes == classes
  record = dataset.split("train")[0]
  assert record["image"].shape == shape and record["image"].dtype == np.uint8
  assert "tensorflow" not in sys.modules or "tensorflow.python" not in sys.modules


def test_variable_size_tfds_images_are_resized_for_the_model(mock_tfds, tmp_path):
  dataset = datasets.load("imagenette", image_size=48, data_dir=str(tmp_path))
  assert set(dataset.splits) == {"train", "validation"}
  batch = next(pipeline.eval_batches(dataset.split("validation"), image_shape=dataset.image_shape,
                                     global_batch_size=8, resize_to=56))
  assert batch["image"].shape == (8, 48, 48, 3) and batch["mask"].all()
  train = pipeline.train_iterator(dataset.split("train"), image_shape=dataset.image_shape, local_batch_size=4,
                                  seed=0, augment=pipeline.HostAugment("random_resized_crop"))
  assert next(train)["image"].shape == (4, 48, 48, 3)


def test_imagenet_not_prepared_names_the_manual_download(tmp_path):
  with pytest.raises(datasets.DatasetNotPrepared) as e:
    datasets.load("imagenet2012", image_size=224, data_dir=str(tmp_path))
  assert "downloads/manual" in str(e.value) and "tfds build imagenet2012 --file_format=array_record" in str(e.value)


def test_training_on_a_mocked_tfds_dataset(mock_tfds, tiny_config, tmp_path):
  tiny_config.dataset.name = "mnist"
  tiny_config.dataset.data_dir = str(tmp_path / "tfds")
  tiny_config.num_train_steps = 3
  summary = trainer.train_and_evaluate(tiny_config, str(tmp_path / "run"))
  assert summary["step"] == 3 and summary["eval/num_examples"] == 40


def _make_folder(root, sizes=((20, 30), (40, 25)), modes=("RGB", "L")):
  rng = np.random.default_rng(0)
  for split, n in (("train", 6), ("test", 3)):
    for cls in ("cat", "dog"):
      os.makedirs(root / split / cls, exist_ok=True)
      for i in range(n):
        h, w = sizes[i % len(sizes)]
        mode = modes[i % len(modes)]
        pixels = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        Image.fromarray(pixels, mode).save(root / split / cls / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_image_folder_is_converted_once_and_reused(tmp_path, monkeypatch):
  _make_folder(tmp_path)
  dataset = datasets.load("folder", 16, str(tmp_path), channels=3)
  assert dataset.class_names == ("cat", "dog") and len(dataset.split("train")) == 12
  assert len(dataset.split("test")) == 6 and dataset.split("train")[0]["image"].shape == (16, 16, 3)
  pixels = np.asarray(dataset.split("train").images, np.float64).reshape(-1, 3)
  np.testing.assert_allclose(dataset.mean, pixels.mean(0), rtol=1e-10)
  np.testing.assert_allclose(dataset.std, pixels.std(0), rtol=1e-10)
  from cnn_flax.data import folder
  monkeypatch.setattr(folder, "_convert", lambda *a: pytest.fail("converted again"))
  again = datasets.load("folder", 16, str(tmp_path), channels=3)
  np.testing.assert_array_equal(again.split("train").images, dataset.split("train").images)


def test_changing_an_image_folder_triggers_a_new_conversion(tmp_path):
  _make_folder(tmp_path)
  datasets.load("folder", 16, str(tmp_path), channels=1)
  Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "train" / "cat" / "new.png")
  assert len(datasets.load("folder", 16, str(tmp_path), channels=1).split("train")) == 13


def test_bad_image_folders_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="ROOT/train/<class>/<image>"):
    datasets.load("folder", 16, str(tmp_path))
  _make_folder(tmp_path)
  (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not an image")
  with pytest.raises(UserError, match="cannot read image .*broken.png"):
    datasets.load("folder", 16, str(tmp_path))


def test_training_on_an_image_folder(tiny_config, tmp_path):
  _make_folder(tmp_path / "images")
  tiny_config.dataset.name = "folder"
  tiny_config.dataset.data_dir = str(tmp_path / "images")
  tiny_config.batch_size = 4
  tiny_config.eval_batch_size = 4
  tiny_config.num_train_steps = 2
  summary = trainer.train_and_evaluate(tiny_config, str(tmp_path / "run"))
  assert summary["eval/num_examples"] == 6


def test_grain_worker_processes_yield_the_same_batches(tmp_path):
  _make_folder(tmp_path)
  dataset = datasets.load("folder", 16, str(tmp_path), channels=3)
  kwargs = dict(image_shape=dataset.image_shape, local_batch_size=4, seed=1,
                augment=pipeline.HostAugment("random_resized_crop"))
  in_process = pipeline.train_iterator(dataset.split("train"), **kwargs)
  workers = pipeline.train_iterator(dataset.split("train"), num_workers=1, **kwargs)
  for _ in range(4):
    np.testing.assert_array_equal(next(in_process)["image"], next(workers)["image"])
