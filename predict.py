"""Top-5 classes for your own images: `python predict.py --workdir runs/lenet5 IMAGE_OR_FOLDER... [--step N | --best]
[--ema] [--json]`.

Each image is preprocessed exactly as evaluation does (the run's channels, size, crop and normalisation) and
classified by the workdir's checkpoint; one readable block per image, or with --json one JSON object per line.
"""
import json

from absl import app, flags

from cnn_flax import cli

_RUN = cli.define_checkpoint_flags("Use")
_JSON = flags.DEFINE_bool("json", False, "One JSON object per image and line instead of readable blocks.")
_TOP = flags.DEFINE_integer("top", 5, "How many classes to show per image.")


def main(argv):
  _RUN.check()
  from cnn_flax import inference, predictor
  results = cli.run_user_command(lambda: predictor.predict(
      inference.restore(_RUN.workdir.value, _RUN.step.value, _RUN.best.value, _RUN.ema.value), argv[1:], _TOP.value))
  for result in results:
    print(json.dumps(result) if _JSON.value else predictor.format_block(result) + "\n", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
