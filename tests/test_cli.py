"""The entry points as a user runs them: clean user errors, multi-device equivalence, eval.py's last line."""
import json
import os

import numpy as np
import pytest

from tests.conftest import fingerprint, read_metrics, run_script

TINY = ["--config.num_train_steps=8", "--config.batch_size=32", "--config.eval_batch_size=64",
        "--config.log_every_steps=2", "--config.eval_every_steps=0", "--config.checkpoint_every_steps=0",
        "--config.schedule.name=constant", "--config.progress_bar=False", "--config.augment.crop_padding=0"]


LENET = ["--config", "configs/lenet5.py", *TINY]  # the command of `one_device_run`, the finished run below


def _case(name, args, message, against="finished"):
  return pytest.param(args, message, against, id=f"{name}-{against}")


# Each bad command runs against a workdir that holds a finished run of LENET, which it must leave byte-identical.
# Where that run changes the error (a run-identity field differs from it), the command runs in a fresh workdir too.
USER_ERRORS = [
    _case("missing-config", ["--config", "configs/missing.py", *TINY], "config file 'configs/missing.py' not found"),
    _case("missing-config-no-overrides", ["--config", "configs/missing.py"],
          "config file 'configs/missing.py' not found"),
    _case("unknown-key", [*LENET, "--config.nope=1"], "unknown config key 'nope'"),
    _case("bad-type", [*LENET, "--config.batch_size=abc"], "flag --config.batch_size=abc: invalid literal for int()"),
    _case("unknown-preset", ["--config", "configs/lenet5.py:zzz", *TINY], "unknown preset 'zzz'"),
    _case("unknown-model", [*LENET, "--config.model.name=resnet9000"], "unknown model; choose one of"),
    _case("negative-steps", [*LENET, "--config.num_train_steps=-5"], "config.num_train_steps=-5"),
    _case("unknown-optimizer", [*LENET, "--config.optimizer.name=adagrad"], "unknown optimizer"),
    _case("batch-too-large", [*LENET, "--config.batch_size=100000"], "holds another run (batch_size: 32 -> 100000)"),
    _case("batch-too-large", [*LENET, "--config.batch_size=100000"], "exceeds the 1442 training examples", "fresh"),
    _case("no-config", [], "--config is required"),
    _case("positional-argument", [*LENET, "extra"], "unexpected arguments ['extra']"),
    _case("unprepared-tfds", [*LENET, "--config.dataset.name=cifar10", "--config.dataset.data_dir=/nonexistent"],
          "holds another run (dataset.name: 'digits' -> 'cifar10')"),
    _case("unprepared-tfds", [*LENET, "--config.dataset.name=cifar10", "--config.dataset.data_dir=/nonexistent"],
          "is not prepared in '/nonexistent'; prepare it with `tfds build cifar10 --file_format=array_record", "fresh"),
    _case("unprepared-with-preset-hint",
          ["--config", "configs/resnet20_cifar.py", *TINY, "--config.dataset.data_dir=/nonexistent"],
          "holds another run (model.name: 'lenet5' -> 'resnet20'"),
    _case("unprepared-with-preset-hint",
          ["--config", "configs/resnet20_cifar.py", *TINY, "--config.dataset.data_dir=/nonexistent"],
          "or train the same model on the bundled data: --config configs/resnet20_cifar.py:digits", "fresh"),
    # Resumes that change only accepted fields pass the workdir check and fail later, while building the run.
    _case("missing-eval-split", [*LENET, "--config.dataset.eval_split=validation"],
          "dataset 'digits' has no split 'validation'; its splits are: train, test"),
    _case("host-augment-on-device", [*LENET, "--config.dataset.on_device=yes",
                                     "--config.augment.host=random_resized_crop"],
          "config.dataset.on_device='yes' cannot apply the host augmentation 'random_resized_crop'"),
    _case("unknown-frozen-layer", [*LENET, "--config.freeze=('layer1',)"], "config.freeze names ['layer1']"),
    _case("negative-ema-decay", [*LENET, "--config.ema_decay=-0.1"], "config.ema_decay=-0.1: must be in [0, 1)"),
    _case("negative-clip-norm", [*LENET, "--config.optimizer.grad_clip_norm=-1.0"],
          "config.optimizer.grad_clip_norm=-1.0: must be >= 0 (0 = off)"),
    _case("accumulation-split", [*LENET, "--config.grad_accum_steps=5"],
          "config.batch_size=32 does not split into 5 microbatches over 1 devices"),
]


@pytest.mark.parametrize("args, message, against", USER_ERRORS)
def test_user_errors_exit_2_with_one_line_and_touch_nothing(args, message, against, one_device_run, tmp_path):
  workdir = one_device_run[0] if against == "finished" else str(tmp_path / "w")
  before = fingerprint(workdir) if against == "finished" else None
  result = run_script("train.py", *args, "--workdir", workdir)
  assert result.returncode == 2, result.stderr
  # Exactly one line on stderr: no traceback, no warnings, no logging around it.
  assert len(result.stderr.splitlines()) == 1, result.stderr
  assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
  if against == "finished":
    assert fingerprint(workdir) == before  # the earlier run is byte-identical
  else:
    assert not os.path.exists(workdir)  # nothing was created


def test_unusable_workdir_is_a_user_error(tmp_path):
  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("x")
  result = run_script("train.py", "--config", "configs/lenet5.py", "--workdir", str(not_a_dir))
  assert result.returncode == 2
  assert result.stderr.splitlines() == [f"error: --workdir {str(not_a_dir)!r} is a file, not a directory; "
                                        f"pass a directory path"]
  assert not_a_dir.read_text() == "x"


def test_eval_of_a_missing_run_is_a_user_error(tmp_path):
  result = run_script("eval.py", "--workdir", str(tmp_path))
  assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
  assert result.stderr.startswith("error: ") and "holds no training run" in result.stderr
  assert os.listdir(tmp_path) == []  # eval.py wrote no report into it


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("one_device"))
  result = run_script("train.py", "--config", "configs/lenet5.py", "--workdir", workdir, *TINY)
  assert result.returncode == 0, result.stderr
  return workdir, result


def test_training_prints_a_summary(one_device_run):
  workdir, result = one_device_run
  assert f"workdir: {workdir}" in result.stdout
  assert "test accuracy" in result.stdout and f"checkpoints: {os.path.abspath(workdir)}" in result.stdout


def test_four_devices_match_one_device(one_device_run, tmp_path):
  workdir, _ = one_device_run
  result = run_script("train.py", "--config", "configs/lenet5.py", "--workdir", str(tmp_path), *TINY,
                      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert result.returncode == 0, result.stderr
  one = [r for r in read_metrics(workdir) if "train/loss" in r]
  four = [r for r in read_metrics(str(tmp_path)) if "train/loss" in r]
  assert [r["step"] for r in one] == [r["step"] for r in four] == [2, 4, 6, 8]
  np.testing.assert_allclose([r["train/loss"] for r in four], [r["train/loss"] for r in one], rtol=1e-4)
  eval_one = [r for r in read_metrics(workdir) if "eval/loss" in r][-1]
  eval_four = [r for r in read_metrics(str(tmp_path)) if "eval/loss" in r][-1]
  np.testing.assert_allclose(eval_four["eval/loss"], eval_one["eval/loss"], rtol=1e-4)


def test_eval_py_ends_with_the_json_line_of_the_logged_figures(one_device_run):
  workdir, _ = one_device_run
  result = run_script("eval.py", "--workdir", workdir)
  assert result.returncode == 0, result.stderr
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  logged = [r for r in read_metrics(workdir) if "eval/accuracy" in r][-1]
  assert figures["step"] == 8 and figures["split"] == "test"
  for key in ("eval/accuracy", "eval/top5_accuracy", "eval/loss", "eval/num_examples"):
    assert figures[key] == logged[key]
  assert "confusion matrix" in result.stdout


def test_rerunning_a_finished_run_resumes_without_training_or_logging(one_device_run):
  workdir, _ = one_device_run
  before = fingerprint(workdir)
  result = run_script("train.py", "--config", "configs/lenet5.py", "--workdir", workdir, *TINY)
  assert result.returncode == 0, result.stderr
  assert "step 8/8 (resumed at step 8)" in result.stdout
  after = fingerprint(workdir)
  # Checkpoints, metrics and config are byte-identical. (The TensorBoard writer still opens a new, empty event
  # file: harmless, as TensorBoard reads every event file of a directory; summary.json describes the last
  # invocation, so its wall time is this one's.)
  assert {f: h for f, h in after.items() if f in before and f != "summary.json"} == \
      {f: h for f, h in before.items() if f != "summary.json"}
  assert all(f.startswith("events.out.tfevents.") for f in set(after) - set(before))


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_a_diverged_run_exits_1_naming_the_step(tmp_path):
  result = run_script("train.py", "--config", "configs/lenet5.py", "--workdir", str(tmp_path), *TINY,
                      "--config.optimizer.learning_rate=1e3", "--config.optimizer.momentum=0.0",
                      "--config.checkpoint_every_steps=2", "--config.log_every_steps=1")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  # The gradient norm overflows at step 3 (the loss would follow at step 4), after the checkpoint of step 2.
  [line] = result.stderr.splitlines()
  assert line.startswith("error: the training grad norm became non-finite (inf) at step 3; ")
  assert f"the last good checkpoint is step 2 in {tmp_path / 'checkpoints'};" in line


def test_training_never_imports_tensorflow(tmp_path):
  code = ("import sys, runpy; sys.argv = ['train.py', '--config', 'configs/lenet5.py', '--workdir', sys.argv[1], "
          "*sys.argv[2:]]\ntry:\n  runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit as e:\n"
          "  assert not e.code, e.code\nassert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
  result = run_script("-c", code, str(tmp_path), *TINY)
  assert result.returncode == 0, result.stderr


# train.py with a pause before its training batch number `pause_at` (0: never): it creates `<dir>/paused` and waits
# for `<dir>/release`. The test sends SIGTERM during the pause, so the stop lands at a known step of a short run.
PAUSING_TRAIN = """
import os, runpy, sys, time
pause_at, signal_dir = int(sys.argv[1]), sys.argv[2]
sys.argv = ["train.py", *sys.argv[3:]]
from cnn_flax import parallel
real_global_batch, train_batches = parallel.global_batch, []
def pausing_global_batch(local, sharding):
  if "mask" not in local:  # a training batch (evaluation batches carry a mask)
    train_batches.append(1)
    if len(train_batches) == pause_at:
      open(os.path.join(signal_dir, "paused"), "w").close()
      while not os.path.exists(os.path.join(signal_dir, "release")):
        time.sleep(0.01)
  return real_global_batch(local, sharding)
parallel.global_batch = pausing_global_batch
runpy.run_path("train.py", run_name="__main__")
"""


def _start(args, env=None, pause_at=0, signal_dir=""):
  """Starts train.py (paused before training batch `pause_at` if > 0). Its output goes to files, not pipes: a
  process blocked on a full pipe that nobody reads would stall the collectives of the other."""
  import subprocess
  import sys
  import tempfile

  from tests.conftest import REPO_ROOT
  command = [sys.executable, "-c", PAUSING_TRAIN, str(pause_at), str(signal_dir), *args] if pause_at else \
      [sys.executable, "train.py", *args]
  out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
  proc = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=err,
                          text=True)
  proc.output_files = (out, err)
  return proc


def _finish(procs, timeout=300):
  """Waits for every process; returns each one's (stdout, stderr)."""
  outputs = []
  for p in procs:
    try:
      p.wait(timeout=timeout)
    except BaseException:
      for q in procs:
        q.kill()
      raise
    texts = []
    for f in p.output_files:
      f.seek(0)
      texts.append(f.read())
      f.close()
    outputs.append(tuple(texts))
  return outputs


def _sigterm_during_pause(procs, target, signal_dir, timeout=120):
  """Waits for `target`'s pause, sends it SIGTERM, releases it; returns every process's (stdout, stderr)."""
  import signal
  import time
  deadline = time.time() + timeout
  while not (signal_dir / "paused").exists():
    if time.time() > deadline or any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
      pytest.fail(f"no pause: {[err[-2000:] for _, err in _finish(procs)]}")
    time.sleep(0.02)
  target.send_signal(signal.SIGTERM)
  (signal_dir / "release").touch()
  return _finish(procs, timeout)


def _multi_process_env(port, i):
  return {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
          "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)}


def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes_to_the_straight_runs_result(one_device_run,
                                                                                            tmp_path):
  from cnn_flax import checkpoint, metrics
  from tests.conftest import assert_same_final_state, without_rate
  straight_dir, _ = one_device_run
  workdir, signal_dir = tmp_path / "run", tmp_path / "signals"
  signal_dir.mkdir()
  args = ["--config", "configs/lenet5.py", "--workdir", str(workdir), *TINY]
  # SIGTERM while the batch of step 5 is prepared: a single process checks after every step, so it stops after
  # step 5, between the log steps 4 and 6 and with no checkpoint before (checkpoint_every_steps=0).
  proc = _start(args, pause_at=5, signal_dir=signal_dir)
  [(_, err)] = _sigterm_during_pause([proc], proc, signal_dir)
  assert proc.returncode == 1
  assert err.splitlines() == [f"stopped: SIGTERM received; saved a checkpoint of step 5 of 8 in "
                              f"{workdir / 'checkpoints'}; rerun the same command to resume"]
  assert checkpoint.Checkpoints(str(workdir / "checkpoints"), read_only=True).steps() == [5]
  assert [r["step"] for r in read_metrics(str(workdir))] == [2, 4, 5]  # the steps since 4 were flushed

  result = run_script("train.py", *args)
  assert result.returncode == 0 and "step 8/8 (resumed at step 5)" in result.stdout, result.stderr
  assert_same_final_state(str(workdir), straight_dir)  # bit-identical parameters and optimizer state
  assert not (workdir / metrics.ORPHANED_FILE).exists()  # the stop saved the last logged step
  resumed, straight = without_rate(read_metrics(str(workdir))), without_rate(read_metrics(straight_dir))
  assert [r["step"] for r in resumed] == [2, 4, 5, 6, 8, 8] and [r["step"] for r in straight] == [2, 4, 6, 8, 8]
  assert resumed[:2] == straight[:2] and resumed[4:] == straight[3:]  # lines 2, 4 and both lines of step 8
  # The stop split the interval 5-6 into two lines of one step each; their mean is the straight run's line.
  for key, value in straight[2].items():
    if key != "step":
      assert (resumed[2][key] + resumed[3][key]) / 2 == pytest.approx(value, rel=1e-6), key


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step_and_they_resume(one_device_run, tmp_path):
  """2 processes x 2 CPU devices; process 1 (not the one that writes metrics) gets SIGTERM during step 5.

  Also the multi-process equivalence: resumed, the two processes reproduce the one-process losses (each process
  reads only its slice of the same global batches). One test for both, as every 2-process launch costs seconds.
  """
  workdir, signal_dir = tmp_path / "run", tmp_path / "signals"
  signal_dir.mkdir()
  args = ["--config", "configs/lenet5.py", "--workdir", str(workdir), *TINY]
  port = _free_port()
  procs = [_start(args, _multi_process_env(port, i), pause_at=5 if i == 1 else 0, signal_dir=signal_dir)
           for i in range(2)]
  outputs = _sigterm_during_pause(procs, procs[1], signal_dir)
  # Several processes agree on a stop at the next log step (6), where they sync anyway.
  for p, (_, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 1 and "Traceback" not in err, err
    assert f"stopped: SIGTERM received; saved a checkpoint of step 6 of 8 in {workdir / 'checkpoints'}" in err
  from cnn_flax import checkpoint
  assert checkpoint.Checkpoints(str(workdir / "checkpoints"), read_only=True).steps() == [6]
  assert sorted(f for f in os.listdir(workdir / "checkpoints" / "6" / "data") if f.startswith("process")) == \
      ["process_0-of-2.json", "process_1-of-2.json"]

  port = _free_port()
  procs = [_start(args, _multi_process_env(port, i)) for i in range(2)]
  outputs = _finish(procs)
  for p, (_, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 0, err
  assert "step 8/8 (resumed at step 6)" in outputs[0][0]
  straight_dir, _ = one_device_run
  one = [r for r in read_metrics(straight_dir) if "train/loss" in r]
  two = [r for r in read_metrics(str(workdir)) if "train/loss" in r]
  assert [r["step"] for r in two] == [r["step"] for r in one] == [2, 4, 6, 8]
  np.testing.assert_allclose([r["train/loss"] for r in two], [r["train/loss"] for r in one], rtol=1e-4)
  final_one = [r for r in read_metrics(straight_dir) if "eval/loss" in r][-1]
  final_two = [r for r in read_metrics(str(workdir)) if "eval/loss" in r][-1]
  assert final_two["eval/num_examples"] == 355
  np.testing.assert_allclose(final_two["eval/loss"], final_one["eval/loss"], rtol=1e-4)


def _run_processes(workdir, count, devices_each, *flags):
  """train.py as `count` processes of `devices_each` CPU devices; returns their (returncode, stderr)."""
  import subprocess
  import sys

  from tests.conftest import REPO_ROOT
  port, procs = _free_port(), []
  for i in range(count):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_each}"}
    if count > 1:
      env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(count), JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen([sys.executable, "train.py", "--config", "configs/lenet5.py", "--workdir",
                                   str(workdir), *TINY, *flags], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  return [(p.wait(timeout=300), p.communicate()[1]) for p in procs]


def test_a_checkpoint_moves_between_topologies(one_device_run, tmp_path):
  """Written on 4 devices, resumed on 1 and on 2 processes x 2 devices: the runs continue as a straight run does."""
  import shutil
  straight, _ = one_device_run  # 1 device, steps 1-8
  four = tmp_path / "four"
  assert _run_processes(four, 1, 4, "--config.num_train_steps=4")[0][0] == 0  # steps 1-4 on 4 devices
  shutil.copytree(four, tmp_path / "two_by_two")
  for workdir, count, devices in ((four, 1, 1), (tmp_path / "two_by_two", 2, 2)):
    outcomes = _run_processes(workdir, count, devices)  # resumed to step 8
    assert all(code == 0 for code, _ in outcomes), outcomes
    resumed = [r for r in read_metrics(str(workdir)) if "train/loss" in r]
    expected = [r for r in read_metrics(straight) if "train/loss" in r]
    assert [r["step"] for r in resumed] == [r["step"] for r in expected] == [2, 4, 6, 8]
    # Reductions run in another order on another topology: equal to float rounding, as 4 devices vs 1 (above).
    np.testing.assert_allclose([r["train/loss"] for r in resumed], [r["train/loss"] for r in expected], rtol=1e-4)
    final = [r for r in read_metrics(str(workdir)) if "eval/loss" in r][-1]
    np.testing.assert_allclose(final["eval/loss"], [r for r in read_metrics(straight) if "eval/loss" in r][-1][
        "eval/loss"], rtol=1e-4)


def test_per_device_batchnorm_with_a_batch_that_does_not_split_is_a_user_error(tmp_path):
  result = run_script("train.py", *LENET, "--config.model.bn_sync=False", "--config.batch_size=30",
                      "--workdir", str(tmp_path / "w"), env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
  assert "config.batch_size=30 does not split evenly over 4 devices" in result.stderr
  assert not (tmp_path / "w").exists()
