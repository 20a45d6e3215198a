"""What the entry points share: flag parsing that turns user mistakes into one-line errors (exit 2).

absl and ml_collections report bad flags in three different ways (a traceback for an unknown config key,
"FATAL Flags parsing error" for a wrong type, a silent error object for a missing config file); here all
of them become `error: <what is wrong and how to fix it>` on stderr and exit code 2.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import re
import sys
from typing import Any, Callable

import ml_collections
from absl import flags, logging

from cnn_flax.errors import TrainingDiverged, TrainingStopped, UserError

EXIT_USER_ERROR = 2


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


MODEL_KWARGS_FLAG = "--config.model.kwargs."


def parse_literal(text: str) -> Any:
  """A Python literal (`True`, `0.5`, `(1, 2)`, `None`), or the text itself when it is none (a bare string)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def split_model_kwargs(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
  """Takes `--config.model.kwargs.NAME=VALUE` out of `argv`, as {NAME: parsed VALUE}.

  `model.kwargs` is free-form (module fields of the chosen model), but ml_collections refuses to override a key
  the config file did not define; these flags are applied after the file is loaded instead, so any module field
  can be set from the command line (and swept).
  """
  kept, kwargs = [], {}
  for arg in argv:
    if arg.startswith(MODEL_KWARGS_FLAG):
      name, sep, value = arg[len(MODEL_KWARGS_FLAG):].partition("=")
      if not sep or not name.isidentifier():
        fail(f"{arg!r}: write model fields as --config.model.kwargs.NAME=VALUE, e.g. "
             f"--config.model.kwargs.plain=True")
      kwargs[name] = parse_literal(value)
    else:
      kept.append(arg)
  return kept, kwargs


def parse_flags(argv: list[str]) -> list[str]:
  """An `app.run(flags_parser=...)` that reports every flag problem as a user error."""
  argv, model_kwargs = split_model_kwargs(argv)
  # ml_collections reads override flags from sys.argv itself, not from the argv it is given.
  sys.argv[:] = [arg for arg in sys.argv if not arg.startswith(MODEL_KWARGS_FLAG)]
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
  if model_kwargs:
    config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
    if not isinstance(config, ml_collections.ConfigDict):
      fail("--config.model.kwargs.* needs a --config file")
    with config.model.kwargs.unlocked():
      config.model.kwargs.update(model_kwargs)
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


@dataclasses.dataclass(frozen=True)
class CheckpointFlags:
  """--workdir, --step, --best and --ema: which weights of a training run eval.py, predict.py and export.py use."""
  workdir: flags.FlagHolder
  step: flags.FlagHolder
  best: flags.FlagHolder
  ema: flags.FlagHolder

  def check(self) -> None:
    """One-line errors for a missing --workdir and for --step with --best."""
    if not self.workdir.value:
      fail("--workdir is required, e.g. --workdir runs/lenet5")
    if self.best.value and self.step.value is not None:
      fail("--best and --step exclude each other; pass one of them")


def define_checkpoint_flags(use: str) -> CheckpointFlags:
  return CheckpointFlags(
      workdir=flags.DEFINE_string("workdir", None, "The training run's workdir."),
      step=flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest)."),
      best=flags.DEFINE_bool("best", False, f"{use} the checkpoint with the best eval accuracy."),
      ema=flags.DEFINE_bool("ema", False, f"{use} the moving average of the weights (runs with ema_decay > 0)."))


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


def run_user_command(fn: Callable[[], Any]) -> Any:
  """Runs an entry point's work; a UserError ends it with one line and exit code 2, no traceback.

  A diverged run also ends with its one-line message (which names the step and the last good
  checkpoint), but with exit code 1: it is not a mistake in the command. So does a run stopped by SIGTERM,
  after saving the checkpoint that the same command resumes from.
  """
  from cnn_flax.data.datasets import DatasetNotPrepared
  try:
    return fn()
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
  except BrokenPipeError:  # the reader went away (`sweep.py --dry_run | head`): stop quietly, as `cat` would
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not raise again
    sys.exit(1)
