"""Run a sweep of train.py runs and aggregate them:

  python sweep.py --config configs/lenet5.py --workdir runs/lr --set optimizer.learning_rate=0.1,0.02 \\
      --set batch_size=64,128 [--seeds 3] [--parallel 2] [--launcher slurm] [--dry_run]
  python sweep.py --sweep configs/sweeps/shortcuts.py --workdir runs/shortcuts --seeds 3
  python sweep.py --report runs/shortcuts        # re-aggregate results.csv/.md and the plots, run nothing

Exit code 0 when every run finished, 1 when some failed (each is reported with its error), 2 for a bad sweep.
"""
import os

from absl import app, flags

from cnn_flax import cli

_CONFIG = flags.DEFINE_string("config", "", "Base config FILE[:PRESET] (default: the sweep file's CONFIG).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory: one workdir per run, results, plots.")
_SET = flags.DEFINE_multi_string("set", [], "KEY=V1,V2,...: sweep a config field (repeat: the product).")
_SWEEP = flags.DEFINE_string("sweep", "", "A sweep file whose get_sweep() returns the list of override dicts.")
_SEEDS = flags.DEFINE_integer("seeds", 0, "Repeat every point with seeds 0..N-1 (0: the config's seed, once).")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once (local), or the SLURM array's parallelism.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm", "submitit_local"],
                              "local: subprocesses here; slurm: a submitit job array; submitit_local: submitit's "
                              "local executor (the cluster path, tried on one machine).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print one complete train.py command per run and exit.")
_REPORT = flags.DEFINE_string("report", "", "Re-aggregate the sweep in this directory without running anything.")
_PARTITION = flags.DEFINE_string("slurm_partition", "", "SLURM partition.")
_GPUS = flags.DEFINE_integer("slurm_gpus", 0, "GPUs per SLURM job.")
_TIMEOUT = flags.DEFINE_integer("slurm_timeout_min", 0, "Time limit of each SLURM job, in minutes.")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}")
  from cnn_flax import sweeps  # after flag parsing, so that flag errors come back fast
  here = os.path.dirname(os.path.abspath(__file__))
  train_script = "train.py" if os.path.abspath(os.getcwd()) == here else os.path.join(here, "train.py")
  raise SystemExit(cli.run_user_command(lambda: sweeps.main(
      config=_CONFIG.value, workdir=_WORKDIR.value, sets=_SET.value, sweep_file=_SWEEP.value, seeds=_SEEDS.value,
      parallel=_PARALLEL.value, launcher=_LAUNCHER.value, dry_run=_DRY_RUN.value, report_dir=_REPORT.value,
      slurm={"slurm_partition": _PARTITION.value, "gpus_per_node": _GPUS.value, "timeout_min": _TIMEOUT.value},
      train_script=train_script)))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
