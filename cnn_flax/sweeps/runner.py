"""Running a sweep's train.py commands: here one after another or N at once, or on a SLURM cluster (submitit).

Each run is exactly its train.py command, so the workdir contract, the checks and the resume are train.py's. The
sweep directory keeps `sweep.json` (the config, the runs, their commands and outcomes) and `logs/<run>.log`. A
second invocation skips runs whose workdir already holds the finished run of the same config, and lets train.py
resume the others; a failing run is recorded with its error and does not stop the rest.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from typing import Any

from cnn_flax import config as config_lib
from cnn_flax.sweeps.spec import Run

STATE_FILE = "sweep.json"
LOG_DIR = "logs"


def read_state(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, STATE_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def write_state(workdir: str, state: dict[str, Any]) -> None:
  os.makedirs(workdir, exist_ok=True)
  tmp = os.path.join(workdir, STATE_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(state, f, indent=2)
  os.replace(tmp, os.path.join(workdir, STATE_FILE))  # a crash leaves the old or the new file, never half


def is_finished(run_dir: str, config: dict) -> bool:
  """The workdir holds this very config's run, trained to its last step (train.py would only re-evaluate)."""
  try:
    with open(os.path.join(run_dir, "config.json")) as f:
      saved = json.load(f)
    with open(os.path.join(run_dir, "summary.json")) as f:
      summary = json.load(f)
  except (OSError, json.JSONDecodeError):
    return False
  # On today's defaults, as train.py reads it: a field added to the schema since the run does not make it another.
  saved = json.loads(json.dumps(config_lib.from_saved(saved).to_dict()))
  return saved == config and summary.get("step") == summary.get("total_steps")


def _error_line(log_path: str) -> str:
  """The run's own one-line message (`error: ...`, `stopped: ...`), else the last line of its log."""
  try:
    with open(log_path, errors="replace") as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return "no log"
  for line in reversed(lines):
    if line.startswith(("error: ", "stopped: ")):
      return line
  return lines[-1][:300] if lines else "no output"


def _run_here(run: Run, command: list[str], log_path: str) -> dict[str, Any]:
  start = time.perf_counter()
  with open(log_path, "w") as log:
    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
  outcome = {"status": "done" if result.returncode == 0 else "failed", "returncode": result.returncode,
             "wall_seconds": round(time.perf_counter() - start, 2)}
  if result.returncode:
    outcome["error"] = _error_line(log_path)
  return outcome


def run_local(runs: list[Run], commands: dict[str, list[str]], workdir: str, parallel: int,
              report) -> dict[str, dict]:
  """Runs the commands as subprocesses, `parallel` at a time; `report(run, outcome)` after each."""
  os.makedirs(os.path.join(workdir, LOG_DIR), exist_ok=True)
  outcomes = {}
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    futures = {pool.submit(_run_here, run, commands[run.name], os.path.join(workdir, LOG_DIR, f"{run.name}.log")):
               run for run in runs}
    for future in concurrent.futures.as_completed(futures):
      run = futures[future]
      outcomes[run.name] = future.result()
      report(run, outcomes[run.name])
  return outcomes


def run_submitit(runs: list[Run], commands: dict[str, list[str]], workdir: str, parallel: int, report,
                 cluster: str, slurm: dict[str, Any]) -> dict[str, dict]:
  """Submits the commands through submitit (`cluster`: "slurm", or "local" for its local executor) and waits.

  On SLURM the runs form one job array (at most `parallel` running at once when `parallel` > 0); each job runs its
  train.py command, so preemption and requeueing resume as train.py does.
  """
  import submitit
  os.makedirs(os.path.join(workdir, LOG_DIR), exist_ok=True)
  folder = os.path.join(workdir, "submitit")
  executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
  params = {k: v for k, v in slurm.items() if v}
  if cluster == "slurm" and parallel > 0:
    params["slurm_array_parallelism"] = parallel
  executor.update_parameters(**params)
  jobs = []
  with executor.batch():
    for run in runs:
      jobs.append((run, executor.submit(submitit.helpers.CommandFunction(commands[run.name], verbose=False))))
  print(f"submitted {len(jobs)} {cluster} job(s); logs in {folder}", file=sys.stderr, flush=True)
  outcomes = {}
  for run, job in jobs:
    start = time.perf_counter()
    try:
      output = job.result()
      outcome = {"status": "done", "returncode": 0, "job_id": str(job.job_id)}
    except Exception as e:  # noqa: BLE001  a failed job: keep its message, go on with the others
      output = str(e)
      outcome = {"status": "failed", "returncode": 1, "job_id": str(job.job_id),
                 "error": next((line.strip() for line in reversed(output.splitlines())
                                if line.strip().startswith(("error: ", "stopped: "))),
                               output.strip().splitlines()[-1][:300] if output.strip() else "failed")}
    outcome["wall_seconds"] = round(time.perf_counter() - start, 2)
    with open(os.path.join(workdir, LOG_DIR, f"{run.name}.log"), "w") as f:
      f.write(output if isinstance(output, str) else str(output))
    outcomes[run.name] = outcome
    report(run, outcome)
  return outcomes


def python_command(command: list[str], train_script: str) -> list[str]:
  """A printed command (`python train.py ...`) as this interpreter runs it."""
  return [sys.executable, train_script, *command[2:]]
