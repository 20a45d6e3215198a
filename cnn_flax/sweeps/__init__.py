"""Sweeps: many train.py runs from one base config, their aggregated results and plots.

`sweep(...)` expands the points (`spec`), checks every run's config before anything runs, runs them (`runner`:
here, N at once, or on SLURM through submitit), then `report(workdir)` writes results.csv, results.md and the
plots (`results`, `plots`). `python sweep.py` is the command line.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from cnn_flax.errors import UserError
from cnn_flax.sweeps import plots, results, runner, spec
from cnn_flax.sweeps.spec import product, zipped

__all__ = ["main", "plan", "product", "report", "sweep", "zipped"]


def plan(config_arg: str, sets: list[str], sweep_file: str, seeds: int
         ) -> tuple[str, list[spec.Run], dict, dict[str, Any]]:
  """(config, runs, {run: config dict}, benchmark settings): the sweep's runs, each checked as train.py would.

  Args:
    config_arg: `FILE[:PRESET]`; may be empty when the sweep file names its `CONFIG`.
    sets: `KEY=V1,V2` texts; their product multiplies the sweep file's points (or makes the points alone).
    sweep_file: a file with `get_sweep()` (optional).
    seeds: repeat every point with seeds 0..seeds-1 (0 = the config's own seed, once).
  """
  points, file_config, bench = spec.load_sweep_file(sweep_file) if sweep_file else ([{}], "", {})
  config_arg = config_arg or file_config
  if not config_arg:
    raise UserError("--config is required (or a --sweep file that names its CONFIG)")
  if seeds < 0:
    raise UserError(f"--seeds={seeds}: must be >= 0")
  base = spec.load_config(config_arg)
  axes = {}
  for text in sets:
    key, texts = spec.parse_set(text)
    axes[key] = [spec.value_from_text(base, key, t) for t in texts]
  if axes:
    points = [{**p, **q} for p in points for q in spec.product(**{k.replace(".", "__"): v for k, v in axes.items()})]
  if points == [{}] and not seeds:
    raise UserError("nothing to sweep: give --set KEY=V1,V2, a --sweep file or --seeds N")
  runs = spec.expand(points, seeds)
  return config_arg, runs, spec.check(config_arg, runs), bench


def sweep(config_arg: str, runs: list[spec.Run], configs: dict, workdir: str, *, train_script: str,
          parallel: int = 1, launcher: str = "local", slurm: dict[str, Any] | None = None,
          benchmark: dict[str, Any] | None = None) -> bool:
  """Runs what is not finished yet, then reports. Returns whether every run finished."""
  commands = {r.name: runner.python_command(r.command(config_arg, workdir, train_script), train_script)
              for r in runs}
  state = {"config": config_arg, "runs": [{"name": r.name, "point": r.point, "overrides": r.overrides,
                                           "command": r.shell(config_arg, workdir)} for r in runs],
           "outcomes": runner.read_state(workdir).get("outcomes", {}), "benchmark": benchmark or {}}
  todo = [r for r in runs if not runner.is_finished(os.path.join(workdir, r.name), configs[r.name])]
  for r in runs:
    if r not in todo:
      state["outcomes"][r.name] = {**state["outcomes"].get(r.name, {}), "status": "done"}
  runner.write_state(workdir, state)
  print(f"{len(runs)} runs: {len(runs) - len(todo)} finished already, {len(todo)} to run", file=sys.stderr,
        flush=True)

  # A run that an earlier invocation started (and train.py now resumes) keeps the seconds already spent on it.
  spent = {r.name: state["outcomes"].get(r.name, {}).get("wall_seconds", 0.0) for r in todo
           if os.path.exists(os.path.join(workdir, r.name, "config.json"))}

  def record(run: spec.Run, outcome: dict) -> None:
    if spent.get(run.name):
      outcome = {**outcome, "wall_seconds": round(outcome["wall_seconds"] + spent[run.name], 2)}
    state["outcomes"][run.name] = outcome
    runner.write_state(workdir, state)
    detail = f" ({outcome['error']})" if outcome.get("error") else ""
    print(f"  {outcome['status']:<6} {run.name}{detail}", file=sys.stderr, flush=True)

  if todo and launcher == "local":
    runner.run_local(todo, commands, workdir, parallel, record)
  elif todo:
    cluster = {"slurm": "slurm", "submitit_local": "local"}[launcher]
    runner.run_submitit(todo, commands, workdir, parallel, record, cluster, slurm or {})
  report(workdir)
  return all(state["outcomes"].get(r.name, {}).get("status") == "done" for r in runs)


def report(workdir: str) -> tuple[list[dict], list[dict], list[str]]:
  """Re-reads every run of the sweep in `workdir` and writes results.csv, results.md and the plots."""
  state = runner.read_state(workdir)
  if not state.get("runs"):
    raise UserError(f"{workdir!r} holds no sweep ({runner.STATE_FILE} is missing); pass the sweep's --workdir")
  rows, per_point = results.write(workdir, state)
  paths = plots.write(workdir, rows, per_point, results.swept_keys(state))
  print(f"results: {os.path.join(workdir, 'results.md')}, {os.path.join(workdir, 'results.csv')}; plots: "
        f"{', '.join(os.path.basename(p) for p in paths)}", file=sys.stderr, flush=True)
  return rows, per_point, paths


def main(*, config: str, workdir: str | None, sets: list[str], sweep_file: str, seeds: int, parallel: int,
         launcher: str, dry_run: bool, report_dir: str, slurm: dict[str, Any], train_script: str) -> int:
  """What `python sweep.py` does; returns the exit code (0: every run finished, 1: some failed)."""
  if report_dir:
    report(report_dir)
    return 0
  if not workdir:
    raise UserError("--workdir is required: the directory that will hold the runs and the results")
  config_arg, runs, configs, bench = plan(config, sets, sweep_file, seeds)
  if dry_run:
    for run in runs:
      print(run.shell(config_arg, workdir, train_script), flush=True)
    return 0
  ok = sweep(config_arg, runs, configs, workdir, train_script=train_script, parallel=parallel, launcher=launcher,
             slurm=slurm, benchmark=bench)
  return 0 if ok else 1
