"""Evaluate a checkpoint: `python eval.py --workdir runs/lenet5 [--split S] [--step N | --best] [--ten_crop] [--ema]`.

Prints a report (per-class accuracy, confusion matrix; also saved under WORKDIR/eval/) and, as the last
line of stdout, one JSON object: step, split, eval/accuracy, eval/top5_accuracy, eval/loss, eval/num_examples.
"""
import json

from absl import app, flags

from cnn_flax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: the run's eval split).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_BEST = flags.DEFINE_bool("best", False, "Evaluate the checkpoint with the best eval accuracy.")
_TEN_CROP = flags.DEFINE_bool("ten_crop", False, "Average 10 crops per image (corners, centre, mirrored).")
_EMA = flags.DEFINE_bool("ema", False, "Evaluate the moving average of the weights (runs with ema_decay > 0).")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}")
  if not _WORKDIR.value:
    cli.fail("--workdir is required, e.g. --workdir runs/lenet5")
  if _BEST.value and _STEP.value is not None:
    cli.fail("--best and --step exclude each other; pass one of them")
  from cnn_flax import evaluator
  figures = {}
  cli.run_user_command(lambda: figures.update(
      evaluator.evaluate_workdir(_WORKDIR.value, _SPLIT.value, _STEP.value, _BEST.value, _TEN_CROP.value,
                                 _EMA.value)))
  print(json.dumps(figures), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
