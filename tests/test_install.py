"""The library as an installed package: `pip install .`, then a user's own config file trained from anywhere."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

from tests.conftest import REPO_ROOT

USER_SCRIPT = """
import json, os, sys, importlib.util
repo = {repo!r}
assert not any(os.path.abspath(p or ".") == repo for p in sys.path), sys.path
import cnn_flax
assert cnn_flax.__file__.startswith({site!r}), cnn_flax.__file__
spec = importlib.util.spec_from_file_location("my_lenet", "my_lenet.py")
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)
config = recipe.get_config()
config.num_train_steps, config.batch_size, config.log_every_steps = 4, 32, 2
config.eval_every_steps = config.checkpoint_every_steps = 0
config.progress_bar = False
from cnn_flax import config as config_lib, trainer
from cnn_flax.errors import UserError
typo = config.copy_and_resolve_references()
typo.optimizer.learning_rate = -1.0
try:
  config_lib.validate(typo)
  raise SystemExit("a negative learning rate validated")
except UserError as e:
  assert "config.optimizer.learning_rate=-1.0" in str(e), e
summary = trainer.train_and_evaluate(config, "run")
# The package reads nothing from the checkout and edits no import path.
assert not any(os.path.abspath(p or ".") == repo for p in sys.path), sys.path
assert "configs" not in sys.modules
print(json.dumps({{k: summary[k] for k in ("step", "eval/num_examples")}}))
"""


def test_an_installed_copy_trains_a_config_kept_outside_the_checkout(tmp_path):
  # Build from a copy holding only what `pip install .` reads, so nothing is written into the checkout.
  source = tmp_path / "source"
  source.mkdir()
  for name in ("pyproject.toml", "requirements.txt", "README.md"):
    shutil.copy(os.path.join(REPO_ROOT, name), source)
  shutil.copytree(os.path.join(REPO_ROOT, "cnn_flax"), source / "cnn_flax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  site = tmp_path / "site"
  # Without setuptools in this environment (a bare Python 3.12 venv), pip fetches it for an isolated build.
  isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
  pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation, "--target",
                        str(site), str(source)], capture_output=True, text=True, timeout=300)
  assert pip.returncode == 0, pip.stderr
  assert (site / "cnn_flax" / "data" / "bundled" / "digits.npz").exists()  # package data is installed
  assert not (site / "configs").exists() and not (site / "tests").exists()  # the library only

  project = tmp_path / "my_project"
  project.mkdir()
  shutil.copy(os.path.join(REPO_ROOT, "configs", "lenet5.py"), project / "my_lenet.py")
  (project / "use.py").write_text(USER_SCRIPT.format(repo=REPO_ROOT, site=str(site)))
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([sys.executable, "use.py"], cwd=project, env={**env, "PYTHONPATH": str(site)},
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary == {"step": 4, "eval/num_examples": 355}
  assert (project / "run" / "metrics.jsonl").exists() and (project / "run" / "checkpoints" / "4").is_dir()
