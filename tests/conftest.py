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


def checkpoint_arrays(workdir, step=None):
  """(step, {path: array}) of everything a checkpoint's state holds: step, params, batch stats, optimizer state."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp

  from cnn_flax import checkpoint
  directory = os.path.join(workdir, "checkpoints")
  if step is None:
    step = checkpoint.Checkpoints(directory, read_only=True).latest_step()
  state = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(directory, str(step), "state")))
  return step, {jax.tree_util.keystr(path): np.asarray(leaf)
                for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def assert_same_final_state(workdir, reference_dir):
  """The final checkpoints hold bit-identical arrays (not merely close ones)."""
  import numpy as np
  step, arrays = checkpoint_arrays(workdir)
  reference_step, reference = checkpoint_arrays(reference_dir)
  assert step == reference_step and arrays.keys() == reference.keys()
  assert any(key.startswith("['opt_state']") for key in arrays)  # the optimizer state is compared too
  for key in reference:
    np.testing.assert_array_equal(arrays[key], reference[key], err_msg=key)


def without_rate(rows):
  """Metrics rows without images/s, the one logged figure that depends on the machine's speed."""
  return [{k: v for k, v in r.items() if k != "train/images_per_sec"} for r in rows]


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
