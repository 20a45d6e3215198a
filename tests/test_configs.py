"""Every shipped config and preset builds a valid config whose docstring gives the command and the result."""
import glob
import importlib
import os

import pytest

from cnn_flax import config as config_lib
from cnn_flax import models
from tests.conftest import REPO_ROOT

CONFIG_FILES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(REPO_ROOT, "configs",
                                                                                               "*.py"))
                      if not p.endswith(("base.py", "__init__.py")))
CASES = [(name, preset) for name in CONFIG_FILES for preset in importlib.import_module(f"configs.{name}").PRESETS]


@pytest.mark.parametrize("name, preset", CASES)
def test_config_and_preset_validate(name, preset):
  config = importlib.import_module(f"configs.{name}").get_config(preset)
  config_lib.validate(config)
  assert config.model.name in models.names()
  if preset == "digits":
    assert config.dataset.name == "digits" and config.augment.host == "none"


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_docstring_gives_the_command_and_expected_result(name):
  doc = importlib.import_module(f"configs.{name}").__doc__
  assert f"python train.py --config configs/{name}.py" in doc and "Expected" in doc
  assert "MEASURED" not in doc, "fill in the measured figure"


def test_unknown_preset_is_refused():
  from configs import resnet50
  with pytest.raises(ValueError, match="unknown preset 'nope'.*v1, digits"):
    resnet50.get_config("nope")
