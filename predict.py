"""Top-5 classes for your own images: `python predict.py --workdir runs/lenet5 IMAGE_OR_FOLDER... [--step N | --best]
[--ema] [--json]`.

Each image is preprocessed exactly as evaluation does (the run's channels, size, crop and normalisation) and
classified by the workdir's checkpoint; one readable block per image, or with --json one JSON object per line.
"""
import json

from absl import app, flags

from cnn_flax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_BEST = flags.DEFINE_bool("best", False, "Use the checkpoint with the best eval accuracy.")
_EMA = flags.DEFINE_bool("ema", False, "Use the moving average of the weights (runs with ema_decay > 0).")
_JSON = flags.DEFINE_bool("json", False, "One JSON object per image and line instead of readable blocks.")
_TOP = flags.DEFINE_integer("top", 5, "How many classes to show per image.")


def main(argv):
  if not _WORKDIR.value:
    cli.fail("--workdir is required, e.g. --workdir runs/lenet5")
  if _BEST.value and _STEP.value is not None:
    cli.fail("--best and --step exclude each other; pass one of them")
  from cnn_flax import inference, predictor
  results = cli.run_user_command(lambda: predictor.predict(
      inference.restore(_WORKDIR.value, _STEP.value, _BEST.value, _EMA.value), argv[1:], _TOP.value))
  for result in results:
    print(json.dumps(result) if _JSON.value else predictor.format_block(result) + "\n", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
