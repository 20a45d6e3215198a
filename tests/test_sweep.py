"""sweep.py: expansion, checks before anything runs, runs, skipping finished runs, failures, report and plots."""
import csv
import glob
import json
import os
import shlex
import subprocess
import sys

import pytest

from cnn_flax.errors import UserError
from cnn_flax.sweeps import results, runner, spec
from tests.conftest import REPO_ROOT, read_metrics, run_script

# The tiny LeNet-5 run of the end-to-end tests, as flags of the base config.
TINY = ["--set", "num_train_steps=4", "--set", "log_every_steps=2", "--set", "eval_every_steps=0",
        "--set", "checkpoint_every_steps=0", "--set", "eval_batch_size=128"]


def _sweep(*args, **kwargs):
  return run_script("sweep.py", *args, **kwargs)


# --- points ---------------------------------------------------------------------------------------------------
def test_product_and_zipped_build_the_points():
  assert spec.product(optimizer__learning_rate=[0.1, 0.2], seed=[1]) == [
      {"optimizer.learning_rate": 0.1, "seed": 1}, {"optimizer.learning_rate": 0.2, "seed": 1}]
  assert spec.zipped(model__name=["a", "b"], dataset__image_size=[32, 64]) == [
      {"model.name": "a", "dataset.image_size": 32}, {"model.name": "b", "dataset.image_size": 64}]
  with pytest.raises(UserError, match="one length"):
    spec.zipped(a=[1, 2], b=[1])


def test_set_values_split_outside_brackets_and_parse_by_field_type():
  assert spec.parse_set("schedule.decay_at=(0.3,0.6),(0.5, 0.75)") == ("schedule.decay_at", ["(0.3,0.6)",
                                                                                              "(0.5, 0.75)"])
  base = spec.load_config(os.path.join(REPO_ROOT, "configs", "lenet5.py"))
  assert spec.value_from_text(base, "schedule.decay_at", "(0.3,0.6)") == (0.3, 0.6)
  assert spec.value_from_text(base, "model.name", "lenet5_paper") == "lenet5_paper"
  assert spec.value_from_text(base, "augment.flip", "True") is True
  assert spec.value_from_text(base, "model.kwargs.se_ratio", "None") is None


def test_runs_get_readable_unique_names_and_seeds():
  runs = spec.expand(spec.product(optimizer__learning_rate=[0.1], batch_size=[32, 64]), seeds=2)
  # Names show what varies (the constant learning rate is in the command, not the name), then the seed.
  assert [r.name for r in runs] == ["batch_size=32,seed=0", "batch_size=32,seed=1", "batch_size=64,seed=0",
                                    "batch_size=64,seed=1"]
  assert [r.point for r in runs[:2]] == ["batch_size=32"] * 2
  assert runs[0].command("configs/lenet5.py", "w") == [
      "python", "train.py", "--config", "configs/lenet5.py", "--workdir", os.path.join("w", runs[0].name),
      "--config.optimizer.learning_rate=0.1", "--config.batch_size=32", "--config.seed=0",
      "--config.progress_bar=False"]
  with pytest.raises(UserError, match="twice"):
    spec.expand([{"seed": 1}, {"seed": 1}], seeds=0)


def test_pareto_front_and_the_bubble_chart(tmp_path):
  from cnn_flax.sweeps import plots
  # (MACs, accuracy): the 2nd is dominated by the 1st (dearer, less accurate); the 4th ties the 3rd's cost.
  front = plots.pareto_front([(1e6, 0.90), (2e6, 0.85), (3e6, 0.95), (3e6, 0.94), (5e6, 0.97)])
  assert front == [0, 2, 4]
  per_point = [{"point": f"p{i}", "macs": m, "params": 1000 * (i + 1), "accuracy_mean": a, "accuracy_ci95": 0.01}
               for i, (m, a) in enumerate([(1e6, 0.9), (2e6, 0.85), (3e6, 0.95)])]
  plots.accuracy_vs_macs(per_point, str(tmp_path / "bubbles.png"))
  assert (tmp_path / "bubbles.png").read_bytes()[:4] == b"\x89PNG"
  runs = [{"point": p["point"], "status": "done", "final_accuracy": p["accuracy_mean"] + d} for p in per_point
          for d in (-0.01, 0.01)] + [{"point": "p0", "status": "failed"}]  # a failed run has no dot
  plots.accuracy_vs_macs(per_point, str(tmp_path / "seeds.png"), runs)
  assert (tmp_path / "seeds.png").read_bytes()[:4] == b"\x89PNG"


def test_a_value_chart_needs_points_that_differ_in_that_value_alone():
  from cnn_flax.sweeps import plots
  # The comparison's shape: each model brings its own image size; VGG alone is run at two learning rates.
  keys = ["model.name", "dataset.image_size", "optimizer.learning_rate", "seed"]
  per_point = [{"model.name": "lenet5", "dataset.image_size": 32}, {"model.name": "alexnet", "dataset.image_size": 64},
               {"model.name": "resnet20", "dataset.image_size": 32},
               {"model.name": "vgg16_bn", "dataset.image_size": 32, "optimizer.learning_rate": 0.01}]
  assert plots.varies_alone("model.name", keys, per_point)  # lenet5 against resnet20 and vgg16_bn, both at 32 px
  assert not plots.varies_alone("dataset.image_size", keys, per_point)  # only AlexNet is at 64 px
  assert not plots.varies_alone("optimizer.learning_rate", keys, per_point)  # VGG-16-BN only at 0.01
  per_point.append({"model.name": "vgg16_bn", "dataset.image_size": 32})
  assert plots.varies_alone("optimizer.learning_rate", keys, per_point)  # now VGG-16-BN at both rates


def test_chart_labels_drop_the_keys():
  from cnn_flax.sweeps import plots
  assert plots.short_name("model=vgg16_bn,image_size=32,classifier_width=512") == "vgg16_bn, 32, 512"
  assert plots.short_name("block_sizes=(6, 6, 6),growth_rate=12") == "(6, 6, 6), 12"  # commas inside a value


def test_confidence_interval_uses_students_t():
  mean, half = results.mean_ci95([0.5, 0.7])
  assert mean == pytest.approx(0.6) and half == pytest.approx(12.706 * 0.1414214 / 1.4142136, rel=1e-5)
  assert results.mean_ci95([0.4])[1] != results.mean_ci95([0.4])[1]  # nan: one run has no interval


# --- bad sweeps: exit 2, one line, nothing written ------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--set", "optimizer.learnin_rate=0.1,0.2"], "unknown config key 'optimizer.learnin_rate'"),
    (["--set", "batch_size="], "the value list of batch_size is empty"),
    (["--set", "batch_size=32,,64"], "empty entry"),
    (["--set", "batch_size"], "write --set KEY=V1,V2"),
    (["--set", "batch_size=32,abc"], "'abc' is not a value of type int"),
    (["--set", "optimizer.learning_rate=-1,0.1"], "config.optimizer.learning_rate=-1.0: must be > 0"),
    (["--set", "model.kwargs.depth=3"], "does not accept the overrides"),
    (["--sweep", "configs/sweeps/absent.py"], "sweep file 'configs/sweeps/absent.py' not found"),
    ([], "nothing to sweep"),
])
def test_a_bad_sweep_is_a_user_error_before_anything_runs(args, message, tmp_path):
  result = _sweep("--config", "configs/lenet5.py", "--workdir", str(tmp_path / "w"), *args)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith("error: ") and message in lines[0], lines[0]
  assert not (tmp_path / "w").exists()


# --- a real sweep -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
  """2 x 2 tiny LeNet-5 runs, one of which fails (a batch larger than its training subset)."""
  workdir = str(tmp_path_factory.mktemp("sweep"))
  result = _sweep("--config", "configs/lenet5.py", "--workdir", workdir, *TINY,
                  "--set", "model.name=lenet5,lenet5_paper", "--set", "dataset.train_fraction=1.0,0.01",
                  "--set", "batch_size=32", "--parallel", "2", timeout=900)
  return workdir, result


def test_a_sweep_runs_every_point_and_reports_the_failure(finished_sweep):
  workdir, result = finished_sweep
  assert result.returncode == 1, result.stderr  # one run failed
  with open(os.path.join(workdir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [(r["model.name"], r["dataset.train_fraction"], r["status"]) for r in rows] == [
      ("lenet5", "1.0", "done"), ("lenet5", "0.01", "failed"), ("lenet5_paper", "1.0", "done"),
      ("lenet5_paper", "0.01", "failed")]
  failed = rows[1]
  # 1% of about 144 per class rounds to the minimum, one example per class: 10 in all.
  assert "exceeds the 10 training examples" in failed["error"]  # train.py's own one-line error
  for row in (rows[0], rows[2]):
    run_dir = os.path.join(workdir, row["run"])
    evals = [m for m in read_metrics(run_dir) if "eval/accuracy" in m]
    assert float(row["final_accuracy"]) == evals[-1]["eval/accuracy"]
    assert float(row["eval_loss"]) == evals[-1]["eval/loss"]
    assert float(row["train_images_per_sec"]) > 0 and float(row["wall_seconds"]) > 0
  assert int(rows[0]["params"]) == 61_706 and int(rows[0]["macs"]) == 416_520  # lenet5's published figures
  assert int(rows[2]["params"]) == 60_850  # lenet5_paper: 60,000 up to F6 + the 850 of its dense output
  for plot in ("curves.png", "accuracy_vs_model_name.png", "accuracy_vs_dataset_train_fraction.png"):
    with open(os.path.join(workdir, plot), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", plot
  # Both LeNet-5 readings do 416,520 MACs (C3's partial table is counted with its full kernel): no compute axis.
  assert int(rows[2]["macs"]) == 416_520 and not os.path.exists(os.path.join(workdir, "accuracy_vs_macs.png"))
  markdown = open(os.path.join(workdir, "results.md")).read()
  assert "## Failed runs" in markdown and "exceeds the 10 training examples" in markdown
  assert "| model=lenet5,train_fraction=1.0 | lenet5 | 1 | 1 |" in markdown  # point, its values, n


def test_a_second_invocation_skips_finished_runs(finished_sweep):
  workdir, _ = finished_sweep
  done = os.path.join(workdir, "model=lenet5,train_fraction=1.0")
  stamp = os.path.getmtime(os.path.join(done, "metrics.jsonl"))
  result = _sweep("--config", "configs/lenet5.py", "--workdir", workdir, *TINY,
                  "--set", "model.name=lenet5,lenet5_paper", "--set", "dataset.train_fraction=1.0,0.01",
                  "--set", "batch_size=32")
  assert result.returncode == 1, result.stderr  # the failing runs fail again: train.py is asked again
  assert "4 runs: 2 finished already, 2 to run" in result.stderr
  assert os.path.getmtime(os.path.join(done, "metrics.jsonl")) == stamp  # not even re-evaluated


def test_a_resumed_run_keeps_the_seconds_already_spent_on_it(finished_sweep):
  """A run that an earlier invocation started and this one resumes reports the wall time of both, not only the
  last few seconds train.py needed to finish it."""
  workdir, _ = finished_sweep
  name = "model=lenet5_paper,train_fraction=1.0"
  os.remove(os.path.join(workdir, name, "summary.json"))  # as if killed after its last checkpoint
  state = runner.read_state(workdir)
  state["outcomes"][name]["wall_seconds"] = 1000.0  # what the interrupted invocation had recorded
  runner.write_state(workdir, state)
  result = _sweep("--config", "configs/lenet5.py", "--workdir", workdir, *TINY,
                  "--set", "model.name=lenet5,lenet5_paper", "--set", "dataset.train_fraction=1.0,0.01",
                  "--set", "batch_size=32")
  assert "4 runs: 1 finished already, 3 to run" in result.stderr
  wall = runner.read_state(workdir)["outcomes"][name]["wall_seconds"]
  assert 1000.0 < wall < 1000.0 + 300, wall


def test_a_run_saved_before_a_field_was_added_still_counts_as_finished(finished_sweep):
  """Runs written by an older checkout lack the fields added since; train.py reads them on today's defaults, and so
  must the sweep, or a rerun would re-invoke every finished run and overwrite its recorded wall time."""
  workdir, _ = finished_sweep
  done = os.path.join(workdir, "model=lenet5,train_fraction=1.0")
  config_path = os.path.join(done, "config.json")
  original = open(config_path).read()
  older = json.loads(original)
  del older["remat"], older["optimizer"]["grad_clip_norm"]  # as a checkout before those fields wrote it
  with open(config_path, "w") as f:
    json.dump(older, f)
  try:
    expected = json.loads(original)  # the config the sweep builds for this run today
    assert runner.is_finished(done, expected)
    expected["remat"] = True  # a real difference still counts
    assert not runner.is_finished(done, expected)
  finally:
    with open(config_path, "w") as f:
      f.write(original)


def test_report_reaggregates_without_running(finished_sweep, tmp_path):
  workdir, _ = finished_sweep
  os.remove(os.path.join(workdir, "results.md"))
  result = _sweep("--report", workdir)
  assert result.returncode == 0, result.stderr
  assert os.path.exists(os.path.join(workdir, "results.md"))
  result = _sweep("--report", str(tmp_path))
  assert result.returncode == 2 and "holds no sweep" in result.stderr


def test_dry_run_prints_commands_that_run_as_printed(tmp_path):
  workdir = str(tmp_path / "w")
  result = _sweep("--config", "configs/lenet5.py", "--workdir", workdir, *TINY,
                  "--set", "optimizer.learning_rate=0.1,0.05", "--seeds", "2", "--dry_run")
  lines = result.stdout.strip().splitlines()
  assert result.returncode == 0 and len(lines) == 4 and not os.path.exists(workdir)
  assert all(line.startswith("python train.py --config configs/lenet5.py --workdir ") for line in lines)
  run = subprocess.run(lines[3], shell=True, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr
  run_dir = shlex.split(lines[3])[5]
  with open(os.path.join(REPO_ROOT, run_dir, "config.json")) as f:
    config = json.load(f)
  assert (config["optimizer"]["learning_rate"], config["seed"], config["num_train_steps"]) == (0.05, 1, 4)


def test_dry_run_into_a_reader_that_stops_early_ends_quietly(tmp_path):
  """`sweep.py --dry_run | head -1`: the closed pipe ends the listing without a traceback."""
  command = (f"{shlex.quote(sys.executable)} sweep.py --config configs/lenet5.py --workdir {tmp_path}/w "
             "--set seed=" + ",".join(map(str, range(2000))) + " --dry_run | head -1")
  result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.stdout.count("\n") == 1 and result.stdout.startswith("python train.py ")
  assert "Traceback" not in result.stderr and result.returncode == 1, result.stderr


def test_a_sweep_file_with_model_switches(tmp_path):
  sweep_file = tmp_path / "switches.py"
  sweep_file.write_text('CONFIG = "configs/resnet20_cifar.py:digits"\n'
                        "from cnn_flax.sweeps import product\n"
                        "def get_sweep():\n"
                        "  return product(model__kwargs__plain=[True, False], num_train_steps=[2])\n")
  result = _sweep("--sweep", str(sweep_file), "--workdir", str(tmp_path / "w"), "--dry_run")
  lines = result.stdout.strip().splitlines()
  assert result.returncode == 0, result.stderr
  assert "--config configs/resnet20_cifar.py:digits" in lines[0]
  assert "--config.model.kwargs.plain=True" in lines[0] and "--config.model.kwargs.plain=False" in lines[1]


def test_the_submitit_path_runs_the_same_commands(tmp_path):
  """--launcher slurm goes through submitit; its local executor runs the same job function on this machine."""
  workdir = str(tmp_path / "w")
  result = _sweep("--config", "configs/lenet5.py", "--workdir", workdir, *TINY, "--set", "seed=0,1",
                  "--launcher", "submitit_local", timeout=600)
  assert result.returncode == 0, result.stderr
  assert "submitted 2 local job(s)" in result.stderr
  for seed in (0, 1):
    summary = json.load(open(os.path.join(workdir, f"seed={seed}", "summary.json")))
    assert summary["step"] == 4 and summary["eval/num_examples"] == 355
  state = json.load(open(os.path.join(workdir, "sweep.json")))
  assert all(outcome["status"] == "done" and outcome["job_id"] for outcome in state["outcomes"].values())


@pytest.mark.parametrize("sweep_file", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "sweeps", "*.py"))),
                         ids=os.path.basename)
def test_every_shipped_sweep_file_plans_and_documents_its_command(sweep_file):
  """Each claim's file builds and validates every run's config (what sweep.py checks before running anything), and
  its docstring holds the command that runs it."""
  from cnn_flax import sweeps
  config_arg, runs, configs, _ = sweeps.plan("", [], sweep_file, 2)
  assert config_arg == "configs/study.py" and runs and set(configs) == {r.name for r in runs}
  name = os.path.relpath(sweep_file, REPO_ROOT)
  with open(sweep_file) as f:
    assert f"python sweep.py --sweep {name} " in f.read()
