"""What the entry points share: flag parsing that turns user mistakes into one-line errors (exit 2).

absl and ml_collections report bad flags in three different ways (a traceback for an unknown config key,
"FATAL Flags parsing error" for a wrong type, a silent error object for a missing config file); here all
of them become `error: <what is wrong and how to fix it>` on stderr and exit code 2.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Callable

import ml_collections
from absl import flags, logging

from cnn_flax.errors import TrainingDiverged, TrainingStopped, UserError

EXIT_USER_ERROR = 2


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
  """An `app.run(flags_parser=...)` that reports every flag problem as a user error."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{_flag_message(e)} (see --helpshort for the flags)")
  except AttributeError as e:  # ml_collections: an override of a key the config does not have
    key = str(e).strip("\"'")
    fail(f"unknown config key {key!r} in a --config.* override; check its spelling against `python -m cnn_flax.schema`")
  except Exception as e:  # noqa: BLE001  any other failure while loading the config file is the user's to fix
    # A missing config file surfaces here, not in loaded_config, when --config.* overrides need its fields.
    missing = re.search(r"Failed loading config file.*No such file or directory: '([^']+)'", str(e), re.DOTALL)
    if missing:
      fail(_config_file_not_found(missing.group(1)))
    fail(f"could not load the config: {type(e).__name__}: {_flag_message(e)}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # Orbax logs every save at INFO and read-only opens at WARNING
  return remaining


def _flag_message(e: Exception) -> str:
  text = str(e).strip()
  # ml_collections wraps the config file's own exception; keep only its last line.
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return lines[-1] if lines else type(e).__name__


def loaded_config(config_flag: flags.FlagHolder, name: str = "config") -> ml_collections.ConfigDict:
  """The parsed config, or a user error when --config was missing or named a file that does not exist."""
  config = config_flag.value
  if not isinstance(config, ml_collections.ConfigDict):
    path = flags.FLAGS[name].config_filename if flags.FLAGS[name].present else None
    if not path:
      fail(f"--{name} is required, e.g. --{name} configs/lenet5.py")
    fail(_config_file_not_found(path))
  return config


def _config_file_not_found(path: str) -> str:
  return (f"config file {path.split(':')[0]!r} not found; pass a path such as configs/lenet5.py "
          f"(relative to {os.getcwd()})")


def config_name(config_flag_name: str = "config") -> str:
  """`runs/` name of a config: `vgg16` for configs/vgg16.py, `vgg16_digits` for configs/vgg16.py:digits."""
  path = flags.FLAGS[config_flag_name].config_filename
  file, _, preset = path.partition(":")
  stem = os.path.splitext(os.path.basename(file))[0]
  return f"{stem}_{preset}" if preset else stem


def _bundled_preset_hint(config_flag_name: str = "config") -> str:
  """'; or run ... :digits' when the --config file has a preset for the bundled dataset."""
  if config_flag_name not in flags.FLAGS or not flags.FLAGS[config_flag_name].present:
    return ""
  file = flags.FLAGS[config_flag_name].config_filename.partition(":")[0]
  try:
    import importlib.util
    spec = importlib.util.spec_from_file_location("_config_for_hint", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.get_config("digits").dataset.name != "digits":
      return ""
  except Exception:  # noqa: BLE001  no such preset: no hint
    return ""
  return f"; or train the same model on the bundled data: --config {file}:digits"


def run_user_command(fn: Callable[[], object]) -> None:
  """Runs an entry point's work; a UserError ends it with one line and exit code 2, no traceback.

  A diverged run also ends with its one-line message (which names the step and the last good
  checkpoint), but with exit code 1: it is not a mistake in the command. So does a run stopped by SIGTERM,
  after saving the checkpoint that the same command resumes from.
  """
  from cnn_flax.data.datasets import DatasetNotPrepared
  try:
    fn()
  except DatasetNotPrepared as e:
    fail(f"{e}{_bundled_preset_hint()}")
  except UserError as e:
    fail(str(e))
  except TrainingDiverged as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except TrainingStopped as e:
    print(f"stopped: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
