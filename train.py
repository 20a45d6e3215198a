"""Train a model: `python train.py --config configs/lenet5.py [--workdir runs/lenet5] [--config.FIELD=VALUE ...]`.

Rerunning the same command resumes from the workdir's latest checkpoint. `python -m cnn_flax.schema` lists every field.
"""
from absl import app, flags
from ml_collections import config_flags

from cnn_flax import cli, hugepages

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally with a preset: "
                                          "configs/vgg16.py:digits.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go (default: runs/<config name>).")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; pass settings as --config.FIELD=VALUE")
  config = cli.loaded_config(_CONFIG)
  workdir = _WORKDIR.value or f"runs/{cli.config_name()}"
  print(f"workdir: {workdir}", flush=True)
  from cnn_flax import trainer  # imported after flag parsing so that flag errors come back fast
  cli.run_user_command(lambda: trainer.train_and_evaluate(config, workdir))


if __name__ == "__main__":
  hugepages.reexec()
  app.run(main, flags_parser=cli.parse_flags)
