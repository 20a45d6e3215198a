"""metrics.jsonl writing and the rewind that keeps it one timeline after a resume."""
import json
import os

from cnn_flax import metrics


def test_each_write_is_one_flushed_json_line(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  writer.write(3, {"train/loss": 1.5})
  # Readable before close: the line was flushed.
  assert metrics.read_jsonl(os.path.join(tmp_path, metrics.METRICS_FILE)) == [{"step": 3, "train/loss": 1.5}]
  writer.write(6, {"eval/accuracy": 0.5})
  writer.close()
  rows = metrics.read_jsonl(os.path.join(tmp_path, metrics.METRICS_FILE))
  assert [r["step"] for r in rows] == [3, 6]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path), enabled=False)
  writer.write(1, {"train/loss": 1.0})
  writer.close()
  assert os.listdir(tmp_path) == []


def test_rewind_moves_lines_past_the_checkpoint_aside_without_losing_them(tmp_path):
  path = os.path.join(tmp_path, metrics.METRICS_FILE)
  with open(path, "w") as f:
    for step in (2, 4, 6, 8):
      f.write(json.dumps({"step": step, "train/loss": step}) + "\n")
    f.write('{"step": 10, "train/lo')  # a line cut short by a killed run
  moved = metrics.rewind(str(tmp_path), 4)
  assert moved == 3
  assert [r["step"] for r in metrics.read_jsonl(path)] == [2, 4]
  orphaned = open(os.path.join(tmp_path, metrics.ORPHANED_FILE)).read().splitlines()
  assert len(orphaned) == 3 and json.loads(orphaned[0])["step"] == 6


READ_WITH_TENSORBOARD = """
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
events = EventAccumulator(sys.argv[1])
events.Reload()
print(json.dumps({key: [(e.step, e.value) for e in events.Scalars(key)] for key in sys.argv[2:]}))
"""


def test_tensorboards_own_reader_reads_what_a_run_logged(tmp_path):
  """`tensorboard --logdir WORKDIR` shows the same scalars as metrics.jsonl (read back with TensorBoard's reader)."""
  import shutil
  import subprocess
  import sys

  from cnn_flax import trainer
  from tests.conftest import make_tiny_config
  trainer.train_and_evaluate(make_tiny_config(), str(tmp_path))
  keys = ("train/loss", "eval/accuracy", "train/learning_rate")
  # TensorBoard's reader imports TensorFlow when it is installed: it runs in a process of its own, so that this
  # one can still check that loading data never imports TensorFlow.
  read = subprocess.run([sys.executable, "-c", READ_WITH_TENSORBOARD, str(tmp_path), *keys], capture_output=True,
                        text=True, timeout=300)
  assert read.returncode == 0, read.stderr[-2000:]
  scalars = json.loads(read.stdout.strip().splitlines()[-1])
  logged = metrics.read_jsonl(os.path.join(tmp_path, metrics.METRICS_FILE))
  for key in keys:
    expected = [(r["step"], r[key]) for r in logged if key in r]
    got = scalars[key]
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for (_, a), (_, b) in zip(got, expected, strict=True))
  command = shutil.which("tensorboard")  # the command the run's summary prints is installed by requirements.txt
  assert command is not None
  assert subprocess.run([command, "--version_tb"], capture_output=True, text=True, timeout=120).returncode == 0
