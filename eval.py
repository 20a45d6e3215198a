"""Evaluate a checkpoint: `python eval.py --workdir runs/lenet5 [--split S] [--step N | --best] [--ten_crop] [--ema]`.

Prints a report (per-class accuracy, confusion matrix; also saved under WORKDIR/eval/) and, as the last
line of stdout, one JSON object: step, split, eval/accuracy, eval/top5_accuracy, eval/loss, eval/num_examples.
"""
import json

from absl import app, flags

from cnn_flax import cli, hugepages

_RUN = cli.define_checkpoint_flags("Evaluate")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: the run's eval split).")
_TEN_CROP = flags.DEFINE_bool("ten_crop", False, "Average 10 crops per image (corners, centre, mirrored).")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}")
  _RUN.check()
  from cnn_flax import evaluator
  figures = cli.run_user_command(lambda: evaluator.evaluate_workdir(
      _RUN.workdir.value, _SPLIT.value, _RUN.step.value, _RUN.best.value, _TEN_CROP.value, _RUN.ema.value))
  print(json.dumps(figures), flush=True)


if __name__ == "__main__":
  hugepages.reexec()
  app.run(main, flags_parser=cli.parse_flags)
