"""export.py and predict.py: artifacts loaded back give the Flax logits; predictions preprocess as evaluation."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from cnn_flax import exporter, foldbn, inference, steps, trainer
from tests.conftest import REPO_ROOT, make_tiny_config, run_script


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lenet"))
  trainer.train_and_evaluate(make_tiny_config(), workdir)
  return workdir


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
  """A narrow ResNet-20 (BatchNorm everywhere) trained a few steps, so its statistics are not the initial ones."""
  workdir = str(tmp_path_factory.mktemp("resnet"))
  config = make_tiny_config()
  config.model.name = "resnet20"
  config.model.kwargs = {"num_filters": 4}
  config.num_train_steps = 4
  trainer.train_and_evaluate(config, workdir)
  return workdir


def _flax_logits(restored, images):
  exp = restored.exp
  x = steps.normalize(images, exp.step_config.mean, exp.step_config.std, exp.dtype)
  return np.asarray(exp.step_config.model.apply(inference.variables(restored), x, train=False))


def _images(restored, n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *restored.exp.image_shape), dtype=np.uint8)


def test_stablehlo_round_trip_is_batch_polymorphic(resnet_run, tmp_path):
  restored = inference.restore(resnet_run)
  exporter.export(restored, "stablehlo", str(tmp_path / "hlo"))
  call = exporter.load_stablehlo(str(tmp_path / "hlo"))
  for n in (1, 5):  # one artifact, any batch
    images = _images(restored, n, seed=n)
    np.testing.assert_allclose(np.asarray(call(images)), _flax_logits(restored, images), rtol=1e-5, atol=1e-5)
  meta = json.load(open(tmp_path / "hlo" / "export.json"))
  assert meta["input"]["shape"] == ["batch", 32, 32, 1] and meta["class_names"][:3] == ["0", "1", "2"]


def test_folding_batchnorm_keeps_the_logits(resnet_run, tmp_path):
  restored = inference.restore(resnet_run)
  variables = inference.variables(restored)
  model = restored.exp.step_config.model
  example = jax.ShapeDtypeStruct((1, 32, 32, 1), np.float32)
  pairs = foldbn.conv_bn_pairs(model, variables, example)
  assert len(pairs) == 19  # the stem and the 18 convolutions of ResNet-20's blocks, each followed by its BN
  assert all(conv[:-1] == bn[:-1] and (conv[-1], bn[-1]) == ("conv", "bn") for conv, bn, _ in pairs)
  images = _images(restored, 4)
  folded, biases = foldbn.fold(variables, pairs)
  x = steps.normalize(images, restored.exp.step_config.mean, restored.exp.step_config.std, np.float32)
  np.testing.assert_allclose(foldbn.folded_apply(model, pairs, folded, biases, x), _flax_logits(restored, images),
                             rtol=1e-4, atol=1e-4)
  meta = exporter.export(restored, "stablehlo", str(tmp_path / "folded"), fold_bn=True)
  assert meta["batchnorm_folded"] == 19
  np.testing.assert_allclose(exporter.load_stablehlo(str(tmp_path / "folded"))(images),
                             _flax_logits(restored, images), rtol=1e-4, atol=1e-4)


LOAD_SAVED_MODEL = """
import json, sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
print(json.dumps(loaded.signatures["serving_default"](images=tf.constant(images))["output_0"].numpy().tolist()))
"""


def test_saved_model_round_trip(lenet_run, tmp_path):
  restored = inference.restore(lenet_run)
  # jax2tf and TensorFlow are loaded in processes of their own: the suite checks elsewhere that loading data and
  # training never import TensorFlow, which would be meaningless once this process had imported it.
  exported = run_script("export.py", "--workdir", lenet_run, "--format", "saved_model",
                        "--output", str(tmp_path / "tf"))
  assert exported.returncode == 0, exported.stderr[-2000:]
  images = _images(restored, 3)
  np.save(tmp_path / "images.npy", images)
  result = subprocess.run([sys.executable, "-c", LOAD_SAVED_MODEL, str(tmp_path / "tf"), str(tmp_path / "images.npy")],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  logits = np.asarray(json.loads(result.stdout.strip().splitlines()[-1]))
  np.testing.assert_allclose(logits, _flax_logits(restored, images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx"], "--format='onnx': choose one of stablehlo, saved_model"),
    (["--format", "stablehlo", "--step", "3"], "no checkpoint for step 3"),
])
def test_export_user_errors(lenet_run, tmp_path, args, message):
  result = run_script("export.py", "--workdir", lenet_run, "--output", str(tmp_path / "out"), *args)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
  assert not (tmp_path / "out").exists()


def test_export_never_overwrites(lenet_run, tmp_path):
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("mine")
  result = run_script("export.py", "--workdir", lenet_run, "--output", str(tmp_path / "out"))
  assert result.returncode == 2 and "is not empty" in result.stderr
  assert os.listdir(tmp_path / "out") == ["keep.txt"]


# --- predict.py -------------------------------------------------------------------------------------------
def test_predictions_are_evaluations_of_the_same_images(lenet_run, tmp_path):
  restored = inference.restore(lenet_run)
  test = restored.exp.dataset.split("test")
  folder = tmp_path / "mine" / "nested"
  folder.mkdir(parents=True)
  for i in range(6):  # the digits at the model's size, so that preprocessing is the identity
    Image.fromarray(test.images[i][..., 0]).save(folder / f"{i}_label{test.labels[i]}.png")
  result = run_script("predict.py", "--workdir", lenet_run, str(tmp_path / "mine"), "--json")
  assert result.returncode == 0, result.stderr
  rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
  assert [os.path.basename(r["image"]) for r in rows] == sorted(os.listdir(folder))
  logits = _flax_logits(restored, test.images[:6])
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  for row in rows:
    i = int(os.path.basename(row["image"]).split("_")[0])
    assert [t["index"] for t in row["top"]] == list(np.argsort(-probs[i])[:5])
    assert [t["class"] for t in row["top"]] == [str(t["index"]) for t in row["top"]]  # digits name their class
    np.testing.assert_allclose([t["probability"] for t in row["top"]], np.sort(probs[i])[::-1][:5], rtol=1e-5)
  readable = run_script("predict.py", "--workdir", lenet_run, str(folder / os.listdir(folder)[0]))
  assert readable.returncode == 0 and readable.stdout.count("%") == 5 and "  1. " in readable.stdout


def test_a_file_that_is_not_an_image_is_a_one_line_error(lenet_run, tmp_path):
  (tmp_path / "notes.png").write_text("not an image")
  result = run_script("predict.py", "--workdir", lenet_run, str(tmp_path / "notes.png"))
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1 and "notes.png' is not an image" in lines[0], result.stderr


def test_predict_without_checkpoints_is_a_user_error(tmp_path):
  result = run_script("predict.py", "--workdir", str(tmp_path), os.path.join(REPO_ROOT, "README.md"))
  assert result.returncode == 2 and "holds no training run" in result.stderr
