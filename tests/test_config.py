"""Config validation and the resume rules."""
import pytest

from cnn_flax import config as config_lib
from cnn_flax.errors import UserError


@pytest.mark.parametrize("field, value, message", [
    ("model.name", "resnet9000", "unknown model"),
    ("dataset.name", "nope", "unknown dataset"),
    ("num_train_steps", -1, "must be >= 0"),
    ("batch_size", 0, "positive global batch size"),
    ("optimizer.name", "adagrad", "unknown optimizer"),
    ("optimizer.learning_rate", 0.0, "must be > 0"),
    ("optimizer.momentum", 1.5, "[0, 1)"),
    ("schedule.name", "linear", "unknown schedule"),
    ("schedule.decay_at", (0.75, 0.5), "increasing fractions"),
    ("label_smoothing", 1.0, "[0, 1)"),
    ("dtype", "float16", "choose one of"),
    ("log_every_steps", 0, "must be > 0"),
    ("keep_checkpoints", 0, "must be >= 1"),
])
def test_validate_names_the_bad_field(tiny_config, field, value, message):
  section, _, key = field.rpartition(".")
  target = tiny_config[section] if section else tiny_config
  target[key] = value
  with pytest.raises(UserError) as e:
    config_lib.validate(tiny_config)
  assert f"config.{field}=" in str(e.value) and message in str(e.value)


def test_validate_accepts_the_shipped_config(tiny_config):
  config_lib.validate(tiny_config)


def test_validate_rejects_fields_the_base_config_lacks(tiny_config):
  tiny_config.unlock()
  tiny_config.optimzer = 1  # a typo in a config file
  with pytest.raises(UserError, match="'optimzer' is not a cnn_flax setting"):
    config_lib.validate(tiny_config)


def test_epochs_must_be_positive_without_steps(tiny_config):
  tiny_config.num_train_steps = 0
  tiny_config.num_epochs = 0.0
  with pytest.raises(UserError, match="num_epochs"):
    config_lib.validate(tiny_config)


def test_identity_differences_separate_new_runs_from_resumable_changes(tiny_config):
  saved = tiny_config.to_dict()
  longer = tiny_config.copy_and_resolve_references()
  longer.num_train_steps = 1000
  longer.optimizer.learning_rate = 0.01
  longer.eval_every_steps = 3
  assert config_lib.identity_differences(saved, longer) == []
  other = tiny_config.copy_and_resolve_references()
  other.model.name = "lenet5_paper"
  other.batch_size = 16
  diffs = config_lib.identity_differences(saved, other)
  assert any(d.startswith("model.name") for d in diffs) and any(d.startswith("batch_size") for d in diffs)


def test_saved_configs_gain_fields_added_later(tiny_config):
  saved = tiny_config.to_dict()
  del saved["augment"]
  restored = config_lib.from_saved(saved)
  assert restored.augment.crop_padding == 0 and restored.model.name == tiny_config.model.name


def test_validate_accepts_any_tfds_dataset_name(tiny_config):
  tiny_config.dataset.name = "oxford_flowers102"  # not registered: known through the TFDS catalogue
  config_lib.validate(tiny_config)
  tiny_config.dataset.name = "oxford_flowers_102"
  with pytest.raises(UserError, match="or any prepared TFDS image-classification dataset by its TFDS name"):
    config_lib.validate(tiny_config)


def _readme_resume_rule(label):
  """The backticked names in the first sentence of the README's "Resuming" bullet that starts with **label**."""
  import os
  import re

  from tests.conftest import REPO_ROOT
  with open(os.path.join(REPO_ROOT, "README.md")) as f:
    section = f.read().split("## Resuming", 1)[1].split("\n## ", 1)[0]
  bullets = re.split(r"\n(?=- )|\n\n", section)
  [bullet] = [b for b in bullets if b.startswith(f"- **{label}**")]
  first_sentence = re.split(r"\.\s+[A-Z]", bullet)[0]  # the list; later sentences explain it
  return re.findall(r"`([^`]+)`", first_sentence)


def _schema_fields(name):
  """The schema fields a README name stands for: itself, or every field under `section.*`."""
  from cnn_flax import schema
  if name.endswith(".*"):
    return {f.path for f in schema.FIELDS if f.path.startswith(name[:-1])}
  return {name} if name in schema.BY_PATH else set()


def test_the_readmes_refused_resume_fields_are_the_run_identity_fields():
  """Docs and code cannot drift: the README lists exactly the fields the schema marks as run identity."""
  from cnn_flax import schema
  names = _readme_resume_rule("Refused")
  assert all(_schema_fields(name) for name in names), names  # every name is a real field or section
  assert set().union(*map(_schema_fields, names)) == set(schema.RUN_IDENTITY_FIELDS)


def test_the_readmes_accepted_resume_fields_are_not_run_identity_fields():
  from cnn_flax import schema
  names = [part for name in _readme_resume_rule("Accepted") for part in name.split("/")]
  assert names  # num_train_steps, num_epochs, eval_split, data_dir, dtype
  for name in names:
    fields = {path for path in schema.BY_PATH if path == name or path.endswith("." + name)}
    assert fields and not fields & set(schema.RUN_IDENTITY_FIELDS), name
