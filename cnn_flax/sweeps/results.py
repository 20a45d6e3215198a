"""A sweep's results: one row per run from its workdir, the mean and 95% interval per point, results.csv/.md.

Per run: the swept values and seed, status, final and best `eval/accuracy`, final `eval/loss`, trainable
parameters and MACs (`summary.model_stats` of the run's model at its input size), training images/s (mean over the
logged intervals) and wall seconds. Per point (the runs that differ only by seed): n, mean final accuracy with a
95% confidence interval (Student's t), mean best accuracy and loss. Two points whose intervals overlap are not
shown to differ: the report says so rather than ranking noise.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import os
from typing import Any

import numpy as np

from cnn_flax import metrics
from cnn_flax.sweeps import costs

# Student's t quantile t(0.975, df) for df = 1..30; beyond that the normal 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

RUN_COLUMNS = ("final_accuracy", "best_accuracy", "eval_loss", "params", "macs", "train_images_per_sec",
               "wall_seconds")


def mean_ci95(values: list[float]) -> tuple[float, float]:
  """(mean, half-width of the 95% confidence interval of the mean); the half-width is nan for one value."""
  x = np.asarray(values, float)
  if len(x) < 2:
    return float(x.mean()) if len(x) else math.nan, math.nan
  t = _T975[len(x) - 2] if len(x) - 1 <= len(_T975) else 1.96
  return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(len(x)))


@functools.lru_cache(maxsize=None)
def _model_figures(name: str, kwargs_json: str, image_size: int, num_classes: int, channels: int) -> tuple[int, int]:
  from cnn_flax import summary
  stats = summary.model_stats(name, image_size, num_classes, channels, **json.loads(kwargs_json))
  return stats["params"], stats["macs"]


def run_row(run_dir: str) -> dict[str, Any]:
  """The figures of one run's workdir (empty where the run has not produced them)."""
  row: dict[str, Any] = {}
  lines = metrics.read_jsonl(os.path.join(run_dir, metrics.METRICS_FILE))
  evals = [r for r in lines if "eval/accuracy" in r]
  if evals:
    row["final_accuracy"] = evals[-1]["eval/accuracy"]
    row["best_accuracy"] = max(r["eval/accuracy"] for r in evals)
    row["eval_loss"] = evals[-1]["eval/loss"]
  rates = [r["train/images_per_sec"] for r in lines if "train/images_per_sec" in r]
  if rates:
    row["train_images_per_sec"] = float(np.mean(rates))
  try:
    with open(os.path.join(run_dir, "config.json")) as f:
      config = json.load(f)
    with open(os.path.join(run_dir, "summary.json")) as f:
      summary = json.load(f)
    height, _, channels = summary["image_shape"]
    row["params"], row["macs"] = _model_figures(config["model"]["name"], json.dumps(config["model"]["kwargs"],
                                                                                   sort_keys=True),
                                                height, summary["num_classes"], channels)
  except (OSError, KeyError, json.JSONDecodeError):
    pass
  return row


def collect(workdir: str, state: dict[str, Any]) -> list[dict[str, Any]]:
  """One row per run of the sweep, in sweep order: run, point, the swept values, seed, status and figures."""
  rows = []
  for run in state["runs"]:
    outcome = state.get("outcomes", {}).get(run["name"], {})
    row = {"run": run["name"], "point": run["point"], **{k: v for k, v in run["overrides"].items()},
           "status": outcome.get("status", "not run"), **run_row(os.path.join(workdir, run["name"]))}
    if "wall_seconds" in outcome:
      row["wall_seconds"] = outcome["wall_seconds"]
    if outcome.get("error"):
      row["error"] = outcome["error"]
    rows.append(row)
  return rows


def points(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
  """Per point: the swept values (seed excepted), n finished runs, mean and 95% interval of final accuracy."""
  out = []
  for name in dict.fromkeys(r["point"] for r in rows):
    members = [r for r in rows if r["point"] == name]
    done = [r for r in members if "final_accuracy" in r and r["status"] == "done"]
    mean, ci = mean_ci95([r["final_accuracy"] for r in done])
    point = {"point": name, **{k: members[0].get(k) for k in keys if k != "seed"}, "n": len(done),
             "accuracy_mean": mean, "accuracy_ci95": ci,
             "best_accuracy_mean": mean_ci95([r["best_accuracy"] for r in done])[0],
             "eval_loss_mean": mean_ci95([r["eval_loss"] for r in done])[0]}
    for key in ("params", "macs", "train_images_per_sec", "wall_seconds"):
      values = [r[key] for r in done if key in r]
      point[key] = float(np.mean(values)) if values else None
    out.append(point)
  return out


def swept_keys(state: dict[str, Any]) -> list[str]:
  """The keys whose value differs between runs (seed included), in first-seen order."""
  from cnn_flax.sweeps.spec import varying
  return varying([run["overrides"] for run in state["runs"]])


def _fmt(value: Any) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  if isinstance(value, bool) or isinstance(value, str):
    return str(value)
  if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
    value = int(value)
  if isinstance(value, int):
    return f"{value:,}"
  if isinstance(value, float):
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
  return str(value)


def _percent(mean: float | None, ci: float | None = None) -> str:
  if mean is None or math.isnan(mean):
    return "-"
  return f"{100 * mean:.2f}" + ("" if ci is None or math.isnan(ci) else f" ± {100 * ci:.2f}")


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
  """Rows as a Markdown table; `accuracy_mean` is shown with its interval, accuracies in percent."""
  header = {"accuracy_mean": "accuracy % (95% CI)", "best_accuracy_mean": "best accuracy %",
            "final_accuracy": "final accuracy %", "best_accuracy": "best accuracy %",
            "train_images_per_sec": "train images/s", "wall_seconds": "wall s",
            "bench_train_images_per_sec": "train images/s (bench)", "bench_eval_images_per_sec": "inference images/s",
            "peak_memory_mb": "peak MiB", "compile_s": "compile s"}
  lines = ["| " + " | ".join(header.get(c, c) for c in columns) + " |", "|" + "---|" * len(columns)]
  for r in rows:
    cells = []
    for c in columns:
      if c == "accuracy_mean":
        cells.append(_percent(r.get(c), r.get("accuracy_ci95")))
      elif c in ("best_accuracy_mean", "final_accuracy", "best_accuracy"):
        cells.append(_percent(r.get(c)))
      else:
        cells.append(_fmt(r.get(c)))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write(workdir: str, state: dict[str, Any]) -> tuple[list[dict], list[dict]]:
  """Writes results.csv (one row per run) and results.md (runs, then points); returns (rows, points)."""
  rows = collect(workdir, state)
  keys = swept_keys(state)
  columns = ["run", *keys, "status", *RUN_COLUMNS, "error"]
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
      writer.writerow({c: json.dumps(r[c]) if isinstance(r.get(c), (list, tuple, dict)) else r.get(c)
                       for c in columns})
  per_point = points(rows, keys)
  costs.add(workdir, state, rows, per_point)  # model comparisons: images/s, memory, compile time per point
  point_columns = ["point", *[k for k in keys if k != "seed"], "n", "accuracy_mean", "best_accuracy_mean",
                   "eval_loss_mean", "params", "macs", "train_images_per_sec", "wall_seconds"]
  if state.get("benchmark"):
    point_columns += list(costs.COLUMNS)
  with open(os.path.join(workdir, "points.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=point_columns + ["accuracy_ci95"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(per_point)
  failed = [r for r in rows if r["status"] != "done"]
  text = [f"# Sweep results: {workdir}", "", f"Base config: `{state['config']}`; {len(rows)} runs, "
          f"{len(rows) - len(failed)} finished.", "", "## Points (mean over seeds, 95% confidence interval)", "",
          markdown_table(per_point, point_columns), "",
          "Accuracy is the final `eval/accuracy`, in percent, with the half-width of its 95% confidence interval over "
          "seeds (Student's t); a difference smaller than the intervals is no difference. results.csv has every run's "
          "raw figures.", "", "## Runs", "", markdown_table(rows, [c for c in columns if c != "error"])]
  if failed:
    text += ["", "## Failed runs", ""] + [f"- `{r['run']}`: {r.get('error', r['status'])}" for r in failed]
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("\n".join(text) + "\n")
  return rows, per_point
