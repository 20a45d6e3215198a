"""Where numbers go: `metrics.jsonl` (one flushed JSON object per line), TensorBoard, and a progress bar.

`metrics.jsonl` is the contract other programs (sweeps, reports, `tail -f`) rely on: every line has
`step` = completed optimizer steps plus keys such as `train/loss` or `eval/accuracy` (fractions in [0, 1]).
Only process 0 writes. TensorBoard event files are written with tensorboardX (no TensorFlow import).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
ORPHANED_FILE = "metrics.orphaned.jsonl"


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """All complete lines of a metrics file (a half-written last line of a killed run is skipped)."""
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          continue
  return rows


def rewind(workdir: str, step: int) -> int:
  """Moves lines logged after `step` (work lost when a run stopped past its last checkpoint) out of
  `metrics.jsonl` into `metrics.orphaned.jsonl`, so the main file stays one timeline after a resume.
  Nothing is deleted. Returns how many lines moved."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  keep, orphaned = [], []
  for line in lines:
    try:
      row_step = json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
      row_step = math.inf  # an incomplete line from a killed run
    (keep if row_step <= step else orphaned).append(line if line.endswith("\n") else line + "\n")
  if orphaned:
    with open(os.path.join(workdir, ORPHANED_FILE), "a") as f:
      f.writelines(orphaned)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)  # atomic: a crash here leaves either the old or the new file
  return len(orphaned)


def _plain(value: Any) -> Any:
  if isinstance(value, (np.floating, np.integer, np.bool_)):
    return value.item()
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return value.item()
  return value


class MetricsWriter:
  """Appends scalars to metrics.jsonl and TensorBoard; a no-op on processes other than 0."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a")
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(logdir=workdir, flush_secs=30)

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()  # followers (tail -f, sweeps) see each line as soon as it is written
    for key, value in row.items():
      if key != "step" and isinstance(value, (int, float)):
        self._tb.add_scalar(key, value, int(step))

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


class Progress:
  """A tqdm bar with step, loss, images/s and ETA, shown on process 0 only."""

  def __init__(self, total: int, initial: int, enabled: bool):
    self._bar = None
    if enabled:
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5)

  def advance(self) -> None:
    if self._bar is not None:
      self._bar.update(1)

  def show(self, **values: Any) -> None:
    if self._bar is not None:
      self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items()},
                            refresh=False)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


class Stopwatch:
  """Images per second between two reports (the first report starts after compilation)."""

  def __init__(self):
    self._start, self._count = None, 0

  def start(self) -> None:
    self._start, self._count = time.perf_counter(), 0

  def count(self, images: int) -> None:
    self._count += images

  def rate(self) -> float | None:
    if self._start is None or self._count == 0:
      return None
    elapsed = time.perf_counter() - self._start
    rate = self._count / elapsed if elapsed > 0 else None
    self.start()
    return rate
