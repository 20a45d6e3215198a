"""Test-wide settings: CPU only, a persistent compilation cache, and helpers for end-to-end runs."""
import hashlib
import json
import os
import subprocess
import sys

# Before jax is imported anywhere: CPU only (no GPU probing) and a compilation cache shared by all tests
# and by the subprocesses they start, so reruns of the suite skip most XLA compilation.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/cnn_flax/jax-tests"))

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)


def run_script(*args, env=None, timeout=300):
  """Runs `python <script> args...` from the repository root; returns the CompletedProcess."""
  full_env = {**os.environ, **(env or {})}
  return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
                        timeout=timeout)


def fingerprint(directory):
  """Every file under `directory` with a hash of its contents: equal fingerprints, byte-identical trees."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def make_tiny_config():
  """LeNet-5 on the digits for a handful of steps: the fastest real training run."""
  from configs import lenet5
  config = lenet5.get_config()
  config.num_train_steps = 12
  config.batch_size = 32
  config.eval_batch_size = 64
  config.log_every_steps = 4
  config.eval_every_steps = 6
  config.checkpoint_every_steps = 6
  config.schedule.name = "constant"
  config.progress_bar = False
  return config


@pytest.fixture
def tiny_config():
  return make_tiny_config()
