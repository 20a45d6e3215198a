"""End-to-end training runs in this process: outputs, exact resume, divergence, refusal of foreign workdirs."""
import hashlib
import math
import os

import jax
import numpy as np
import pytest

from cnn_flax import checkpoint, evaluator, trainer
from cnn_flax.errors import TrainingDiverged, UserError
from tests.conftest import make_tiny_config, read_metrics


def _fingerprint(directory):
  """Every file under `directory` with a hash of its contents."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  config = make_tiny_config()
  workdir = str(tmp_path_factory.mktemp("run"))
  return config, workdir, trainer.train_and_evaluate(config, workdir)


def test_run_writes_config_metrics_and_checkpoints(finished_run):
  config, workdir, summary = finished_run
  assert os.path.exists(os.path.join(workdir, "config.json"))
  rows = read_metrics(workdir)
  train_steps = [r["step"] for r in rows if "train/loss" in r]
  eval_steps = [r["step"] for r in rows if "eval/accuracy" in r]
  assert train_steps == [4, 6, 8, 12] and eval_steps == [6, 12]  # the last step always logged, both kinds
  for r in rows:
    for key, value in r.items():
      if "accuracy" in key:
        assert 0.0 <= value <= 1.0
  assert all(math.isfinite(r["train/loss"]) and r["train/images_per_sec"] > 0 for r in rows if "train/loss" in r)
  assert summary["step"] == 12 and summary["eval/num_examples"] == 355
  assert checkpoint.Checkpoints(summary["checkpoints"], read_only=True).steps() == [6, 12]


def test_reevaluating_the_final_checkpoint_gives_the_logged_accuracy(finished_run):
  _, workdir, summary = finished_run
  logged = [r for r in read_metrics(workdir) if "eval/accuracy" in r][-1]
  figures = evaluator.evaluate_workdir(workdir)
  assert figures["step"] == 12
  for key in ("eval/accuracy", "eval/top5_accuracy", "eval/loss", "eval/num_examples"):
    assert figures[key] == logged[key] == summary[key]
  assert os.path.exists(os.path.join(workdir, "eval", "test_step12_confusion.csv"))


def test_best_checkpoint_is_the_highest_eval_accuracy(finished_run):
  _, workdir, summary = finished_run
  evals = {r["step"]: r["eval/accuracy"] for r in read_metrics(workdir) if "eval/accuracy" in r}
  assert summary["best_step"] == max(evals, key=lambda s: (evals[s], s))
  assert evaluator.evaluate_workdir(workdir, best=True)["step"] == summary["best_step"]


def test_resume_after_a_stop_continues_steps_and_metrics_exactly(finished_run, tmp_path):
  config, straight_dir, _ = finished_run
  stopped = config.copy_and_resolve_references()
  stopped.num_train_steps = 6  # "stops" after the first checkpoint
  trainer.train_and_evaluate(stopped, str(tmp_path))
  summary = trainer.train_and_evaluate(config, str(tmp_path))  # the same command again, longer
  assert summary["step"] == 12
  resumed, straight = read_metrics(str(tmp_path)), read_metrics(straight_dir)
  assert [r["step"] for r in resumed] == [r["step"] for r in straight]
  for a, b in zip(resumed, straight, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      if key != "train/images_per_sec":
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=f"{key} at step {a['step']}")


def test_a_workdir_holding_another_run_is_refused_and_left_untouched(finished_run):
  config, workdir, _ = finished_run
  before = _fingerprint(workdir)
  other = config.copy_and_resolve_references()
  other.model.name = "lenet5_paper"
  with pytest.raises(UserError, match="holds another run.*model.name: 'lenet5' -> 'lenet5_paper'"):
    trainer.train_and_evaluate(other, workdir)
  assert _fingerprint(workdir) == before


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
  tiny_config.optimizer.learning_rate = 1e6
  tiny_config.optimizer.momentum = 0.0
  tiny_config.checkpoint_every_steps = 2
  tiny_config.log_every_steps = 1
  with pytest.raises(TrainingDiverged, match=r"non-finite \(nan\) at step (\d+); the last good checkpoint is step"):
    trainer.train_and_evaluate(tiny_config, str(tmp_path))
  ckpt = checkpoint.Checkpoints(os.path.join(tmp_path, "checkpoints"), read_only=True)
  assert ckpt.steps()  # the good checkpoint survived
  rows = read_metrics(str(tmp_path))
  assert all(math.isfinite(r.get("train/loss", 0.0)) for r in rows)  # no NaN was logged
  assert max(r["step"] for r in rows) >= ckpt.latest_step()


def test_on_device_and_record_feeds_give_the_same_run(tiny_config, tmp_path):
  tiny_config.num_train_steps = 6
  tiny_config.augment.crop_padding = 2
  results = {}
  for feed in ("yes", "no"):
    tiny_config.dataset.on_device = feed
    trainer.train_and_evaluate(tiny_config, str(tmp_path / feed))
    results[feed] = [{k: v for k, v in r.items() if k != "train/images_per_sec"}
                     for r in read_metrics(str(tmp_path / feed))]
  assert results["yes"] == results["no"]


def test_host_augmentation_cannot_be_forced_on_device(tiny_config, tmp_path):
  tiny_config.dataset.on_device = "yes"
  tiny_config.augment.host = "random_resized_crop"
  with pytest.raises(UserError, match="on_device='yes' cannot apply the host augmentation"):
    trainer.train_and_evaluate(tiny_config, str(tmp_path))


def test_fine_tuning_replaces_the_head_and_freezes_stages(finished_run, tmp_path):
  from tests.test_external_data import _make_folder
  config, pretrained_dir, _ = finished_run
  _make_folder(tmp_path / "images")
  tuned = config.copy_and_resolve_references()
  tuned.dataset.name, tuned.dataset.data_dir = "folder", str(tmp_path / "images")
  tuned.batch_size = tuned.eval_batch_size = 4
  tuned.num_train_steps = 3
  tuned.init_from = pretrained_dir
  tuned.freeze = ("c1", "c3")
  trainer.train_and_evaluate(tuned, str(tmp_path / "run"))
  before = checkpoint.load_variables(pretrained_dir)["params"]
  after = checkpoint.load_variables(str(tmp_path / "run"))["params"]
  for frozen in ("c1", "c3"):
    np.testing.assert_array_equal(after[frozen]["kernel"], before[frozen]["kernel"])
  assert not np.array_equal(after["f5"]["kernel"], before["f5"]["kernel"])  # trained from the pretrained value
  assert after["output"]["kernel"].shape == (84, 2) and before["output"]["kernel"].shape == (84, 10)


def test_freezing_a_layer_the_model_lacks_is_a_user_error(tiny_config, tmp_path):
  tiny_config.freeze = ("layer1",)
  with pytest.raises(UserError, match=r"config.freeze names \['layer1'\].*c1, c3, f5, f6, output"):
    trainer.train_and_evaluate(tiny_config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def test_variables_round_trip_through_npz(finished_run, tmp_path):
  _, workdir, _ = finished_run
  variables = checkpoint.load_variables(workdir)
  checkpoint.save_variables(str(tmp_path / "v.npz"), variables)
  again = checkpoint.load_variables(str(tmp_path / "v.npz"))
  np.testing.assert_array_equal(again["params"]["f6"]["bias"], variables["params"]["f6"]["bias"])


def test_bfloat16_compute_trains_with_float32_parameters(tiny_config, tmp_path):
  tiny_config.dtype = "bfloat16"
  tiny_config.num_train_steps = 2
  summary = trainer.train_and_evaluate(tiny_config, str(tmp_path))
  assert math.isfinite(summary["eval/loss"])
  params = checkpoint.load_variables(str(tmp_path))["params"]
  assert all(np.asarray(p).dtype == np.float32 for p in jax.tree.leaves(params))
