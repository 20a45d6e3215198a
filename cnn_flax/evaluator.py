"""Evaluation over a whole split: padded, masked batches, so every example counts exactly once."""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from cnn_flax import parallel
from cnn_flax.data import pipeline


def evaluate(eval_step: Callable, state: Any, source, *, image_shape, global_batch_size: int,
             batch_sharding, with_predictions: bool = False, resize_to: int = 0,
             num_workers: int = 0) -> dict[str, Any]:
  """Top-1/top-5 accuracy and mean loss over every example of `source`.

  Returns `eval/accuracy`, `eval/top5_accuracy`, `eval/loss`, `eval/num_examples`, and with
  `with_predictions` also `predictions` and `labels` (numpy, in split order) for per-class reports.
  """
  totals = None
  predictions, labels = [], []
  batches = pipeline.eval_batches(source, image_shape=image_shape, global_batch_size=global_batch_size,
                                  process_index=jax.process_index(), process_count=jax.process_count(),
                                  resize_to=resize_to, num_workers=num_workers)
  for local in batches:
    batch = parallel.global_batch(local, batch_sharding)
    out = eval_step(state, batch)
    sums = {k: v for k, v in out.items() if k != "prediction"}
    # Accumulate on the device: no host round trip per batch.
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    if with_predictions:
      mask = parallel.to_host(batch["mask"]).astype(bool)
      predictions.append(parallel.to_host(out["prediction"])[mask])
      labels.append(parallel.to_host(batch["label"])[mask])
  batches.close()  # ends Grain's worker processes and frees their shared memory now, not at exit
  totals = jax.device_get(totals)
  count = int(totals["count"])
  result = {"eval/accuracy": float(totals["correct_sum"]) / count,
            "eval/top5_accuracy": float(totals["top5_sum"]) / count,
            "eval/loss": float(totals["loss_sum"]) / count,
            "eval/num_examples": count}
  if with_predictions:
    result["predictions"] = np.concatenate(predictions)
    result["labels"] = np.concatenate(labels)
  return result


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """counts[i, j] = examples of true class i predicted as class j."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predictions), 1)
  return counts


def evaluate_workdir(workdir: str, split: str | None = None, step: int | None = None,
                     best: bool = False, ten_crop: bool = False, ema: bool = False) -> dict[str, Any]:
  """Evaluates a checkpoint of a training workdir with the config saved there.

  Picks the latest checkpoint, or `step`, or with `best` the one with the highest eval accuracy; with `ema` its
  averaged weights (runs trained with `ema_decay`). Prints a report (overall figures, per-class accuracy,
  confusion matrix), saves it under `workdir/eval/`, and returns the figures with `step` and `split`. With
  `ten_crop`, images are resized (shorter side) to `dataset.eval_resize` (default: size / 0.875, i.e. 256 for 224)
  and centre-cropped to that square, and each prediction averages ten crops of the model's size (corners, centre,
  mirrored).
  """
  import json
  import os

  from cnn_flax import inference, steps

  restored = inference.restore(workdir, step, best, ema)
  config, exp, state, step = restored.config, restored.exp, restored.state, restored.step
  replicated, batch_sharding = restored.devices.replicated, restored.devices.batch_sharded
  shardings = jax.tree.map(lambda _: replicated, state)
  split = split or config.dataset.eval_split
  source = exp.dataset.split(split)
  size, _, channels = exp.image_shape
  if ten_crop:
    resize_to = config.dataset.eval_resize or int(round(size / 0.875))
    image_shape, crop = (resize_to, resize_to, channels), size
  else:
    resize_to, image_shape, crop = config.dataset.eval_resize, exp.image_shape, 0
  _, eval_step = steps.make_jitted_steps(exp.step_config, shardings, batch_sharding, replicated, exp.dtype,
                                         ten_crop=crop)
  result = evaluate(eval_step, state, source, image_shape=image_shape, global_batch_size=config.eval_batch_size,
                    batch_sharding=batch_sharding, with_predictions=True, resize_to=resize_to,
                    num_workers=config.dataset.num_workers)

  names = exp.dataset.class_names
  confusion = confusion_matrix(result.pop("labels"), result.pop("predictions"), exp.dataset.num_classes)
  report = format_report(config.model.name, exp.dataset.name, split, step, result, confusion, names)
  figures = {"step": int(step), "split": split, **result, **({"ten_crop": True} if ten_crop else {}),
             **({"ema": True} if ema else {})}
  if jax.process_index() == 0:
    print(report)
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{split}_step{step}{'_10crop' if ten_crop else ''}{'_ema' if ema else ''}")
    with open(stem + "_report.txt", "w") as f:
      f.write(report + "\n")
    np.savetxt(stem + "_confusion.csv", confusion, fmt="%d", delimiter=",",
               header="rows: true class, columns: predicted class; classes: " + " ".join(names))
    with open(stem + ".json", "w") as f:
      json.dump(figures, f, indent=2)
  return figures


def format_report(model: str, dataset: str, split: str, step: int, result: dict[str, Any],
                  confusion: np.ndarray, class_names) -> str:
  per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
  lines = [f"{model} on {dataset}/{split}, checkpoint step {step}",
           f"  accuracy {100 * result['eval/accuracy']:.2f}%  top-5 {100 * result['eval/top5_accuracy']:.2f}%  "
           f"loss {result['eval/loss']:.4f}  examples {result['eval/num_examples']}",
           "", "per-class accuracy:"]
  width = max(len(str(n)) for n in class_names)
  for name, acc, total in zip(class_names, per_class, confusion.sum(1), strict=True):
    lines.append(f"  {str(name):>{width}}  {100 * acc:6.2f}%  ({total} examples)")
  if len(class_names) <= 20:  # a confusion matrix wider than a screen is for the CSV file only
    lines += ["", "confusion matrix (rows: true, columns: predicted):"]
    cell = max(3, len(str(confusion.max())) + 1)
    lines.append(" " * (width + 2) + "".join(f"{str(n)[:cell - 1]:>{cell}}" for n in class_names))
    for name, row in zip(class_names, confusion, strict=True):
      lines.append(f"  {str(name):>{width}}" + "".join(f"{v:>{cell}}" for v in row))
  return "\n".join(lines)
