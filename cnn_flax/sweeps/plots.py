"""A sweep's plots, written as PNG without a display (matplotlib's Agg backend).

* `curves.png`: training loss and eval accuracy against the step, every run (seeds of a point share a colour).
* `accuracy_vs_<key>.png`: final accuracy against each swept value, mean and 95% interval over seeds, one line
  per combination of the other swept values along which the key changes; only for a key that varies while the
  others are held (in the model comparison a model's own classifier width or image size never does, and such a
  chart would compare nothing).
* `accuracy_vs_macs.png` (when the points differ in MACs): mean accuracy against multiply-accumulates, bubble area
  proportional to parameters, each seed's accuracy a dot, the Pareto front (no other point is both cheaper and
  more accurate) marked; the chart of Canziani et al. 2016. Seeds, not intervals: with two or three seeds a 95%
  interval spans most of the axis, and the table beside the chart states it.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any

from cnn_flax import metrics


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")  # no display needed; must precede the pyplot import
  import matplotlib.pyplot as plt
  return plt


def _label(value: Any) -> str:
  return str(tuple(value)) if isinstance(value, list) else str(value)


def curves(workdir: str, rows: list[dict[str, Any]], path: str) -> None:
  plt = _pyplot()
  fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
  colours = {p: plt.cm.tab10(i % 10) for i, p in enumerate(dict.fromkeys(r["point"] for r in rows))}
  labelled = set()
  for r in rows:
    lines = metrics.read_jsonl(os.path.join(workdir, r["run"], metrics.METRICS_FILE))
    train = [(m["step"], m["train/loss"]) for m in lines if "train/loss" in m]
    evals = [(m["step"], m["eval/accuracy"]) for m in lines if "eval/accuracy" in m]
    label = r["point"] if r["point"] not in labelled else None
    labelled.add(r["point"])
    colour = colours[r["point"]]
    if train:
      loss_ax.plot(*zip(*train, strict=True), color=colour, alpha=0.8, lw=1.2, label=label)
    if evals:
      acc_ax.plot(*zip(*evals, strict=True), color=colour, alpha=0.8, lw=1.2, marker="o", ms=3, label=label)
  loss_ax.set(xlabel="step", ylabel="training loss", yscale="log", title="training loss")
  loss_ax.yaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
  acc_ax.set(xlabel="step", ylabel="eval accuracy", title="evaluation accuracy")
  for ax in (loss_ax, acc_ax):
    ax.grid(alpha=0.3)
  if labelled:  # beside the plots, not over the curves
    acc_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


def _held_groups(key: str, keys: list[str], per_point: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
  """The points grouped by their values of every swept key but `key` (and the seed), named by those values."""
  others = [k for k in keys if k not in (key, "seed")]
  groups: dict[str, list[dict]] = {}
  for p in per_point:
    groups.setdefault(", ".join(f"{k.rsplit('.', 1)[-1]}={_label(p.get(k))}" for k in others), []).append(p)
  return groups


def _lines(key: str, keys: list[str], per_point: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
  """The groups of `_held_groups` along which `key` changes: a lone point (a model with its own image size)
  compares nothing."""
  return {label: members for label, members in _held_groups(key, keys, per_point).items()
          if len({_label(p.get(key)) for p in members}) > 1}


def varies_alone(key: str, keys: list[str], per_point: list[dict[str, Any]]) -> bool:
  """Whether some points differ in `key` only: the condition for a chart of accuracy against it."""
  return bool(_lines(key, keys, per_point))


def accuracy_vs(key: str, keys: list[str], per_point: list[dict[str, Any]], path: str) -> None:
  plt = _pyplot()
  groups = _lines(key, keys, per_point)
  per_point = [p for members in groups.values() for p in members]
  values = list(dict.fromkeys(_label(p.get(key)) for p in per_point))
  numeric = all(isinstance(p.get(key), (int, float)) and not isinstance(p.get(key), bool) for p in per_point)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, members in groups.items():
    members = sorted(members, key=lambda p: p.get(key) if numeric else values.index(_label(p.get(key))))
    x = [p.get(key) if numeric else values.index(_label(p.get(key))) for p in members]
    y = [100 * p["accuracy_mean"] for p in members]
    err = [0 if math.isnan(p["accuracy_ci95"]) else 100 * p["accuracy_ci95"] for p in members]
    ax.errorbar(x, y, yerr=err, marker="o", capsize=4, label=label or None)
  if not numeric:
    ax.set_xticks(range(len(values)), values, rotation=20, ha="right")
  means = [100 * p["accuracy_mean"] for p in per_point if not math.isnan(p["accuracy_mean"])]
  if means:  # two seeds give wide intervals: keep the means readable, clip the bars to possible accuracies
    ax.set_ylim(max(0.0, min(means) - 10), min(100.5, max(means) + 10))
  ax.set(xlabel=key, ylabel="final eval accuracy (%)", title=f"accuracy against {key} (95% interval over seeds)")
  ax.grid(alpha=0.3)
  if any(groups):
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
  """Indices of the (cost, accuracy) points no other point beats on both (cheaper or equal and more accurate)."""
  front = []
  for i, (cost, acc) in enumerate(points):
    dominated = any(c <= cost and a > acc or (c < cost and a >= acc) for j, (c, a) in enumerate(points) if j != i)
    if not dominated:
      front.append(i)
  return sorted(front, key=lambda i: points[i][0])


def short_name(point: str) -> str:
  """A point's values without their keys ('model=vgg16_bn,image_size=32' -> 'vgg16_bn, 32'): chart labels."""
  return ", ".join(part.split("=", 1)[-1] for part in re.split(r",(?=[^,=]+=)", point))


def accuracy_vs_macs(per_point: list[dict[str, Any]], path: str, rows: list[dict[str, Any]] = ()) -> None:
  """The bubble chart of `per_point`; `rows` (the runs) add each finished seed's final accuracy as a dot."""
  plt = _pyplot()
  shown = [p for p in per_point if p.get("macs") and p.get("params") and not math.isnan(p["accuracy_mean"])]
  fig, ax = plt.subplots(figsize=(9, 6))
  largest = max((p["params"] for p in shown), default=1)
  # Neighbours in cost alternate above and below their bubbles, so that close labels do not overprint.
  rank = {i: r for r, i in enumerate(sorted(range(len(shown)), key=lambda i: shown[i]["macs"]))}
  for i, p in enumerate(shown):
    ax.scatter(p["macs"] / 1e6, 100 * p["accuracy_mean"], s=40 + 1600 * p["params"] / largest, alpha=0.45,
               color=plt.cm.tab10(i % 10), edgecolors="black", linewidths=0.6)
    seeds = [100 * r["final_accuracy"] for r in rows
             if r.get("point") == p["point"] and r.get("status") == "done" and "final_accuracy" in r]
    ax.scatter([p["macs"] / 1e6] * len(seeds), seeds, s=9, color="black", zorder=3,
               label="one seed" if i == 0 and seeds else None)
    above = rank[i] % 2 == 0
    # Above: to the right; below: to the left, away from the next dearer bubble.
    ax.annotate(f"{short_name(p['point'])}\n{p['params'] / 1e6:.2f}M params",
                (p["macs"] / 1e6, 100 * p["accuracy_mean"]), fontsize=7, xytext=(6, 6) if above else (-6, -22),
                textcoords="offset points", ha="left" if above else "right")
  front = pareto_front([(p["macs"], p["accuracy_mean"]) for p in shown])
  if len(front) > 1:
    ax.plot([shown[i]["macs"] / 1e6 for i in front], [100 * shown[i]["accuracy_mean"] for i in front], "r--",
            lw=1, label="Pareto front (of the means)")
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8, loc="lower left")
  ax.set(xscale="log", xlabel="multiply-accumulates per image (millions, log scale)",
         ylabel="final eval accuracy (%, bubble: mean over seeds)",
         title="accuracy against compute (bubble area: parameters)")
  ax.margins(x=0.12)
  # Plain numbers on the log axis ("20", "300"), not "2 x 10^1": the reader compares costs, not exponents. Minor
  # ticks are labelled at 2x and 5x only, so that neighbouring labels never overprint.
  def plain(value, _):
    leading = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
    return f"{value:g}" if leading in (1, 2, 5) else ""
  ax.xaxis.set_major_formatter(plt.matplotlib.ticker.FuncFormatter(plain))
  ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.FuncFormatter(plain))
  low, high = ax.get_ylim()
  ax.set_ylim(max(low, -2), min(high, 104))  # accuracies, with room for the labels above the best
  ax.grid(alpha=0.3, which="both")
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")  # labels near the edge stay in the picture
  plt.close(fig)


def write(workdir: str, rows: list[dict[str, Any]], per_point: list[dict[str, Any]], keys: list[str]) -> list[str]:
  """Writes every plot that applies; returns their paths."""
  paths = [os.path.join(workdir, "curves.png")]
  curves(workdir, rows, paths[0])
  for key in keys:
    if key != "seed" and varies_alone(key, keys, per_point):
      paths.append(os.path.join(workdir, f"accuracy_vs_{key.replace('.', '_')}.png"))
      accuracy_vs(key, keys, per_point, paths[-1])
  if len({p.get("macs") for p in per_point if p.get("macs")}) > 1:
    paths.append(os.path.join(workdir, "accuracy_vs_macs.png"))
    accuracy_vs_macs(per_point, paths[-1], rows)
  return paths
