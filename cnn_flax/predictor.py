"""Top-k classes for a user's own images, preprocessed exactly as evaluation preprocesses a split.

An image is decoded with Pillow, converted to the run's channels, resized (or, with `dataset.eval_resize`, resized
on its shorter side and centre-cropped) by the same record transform the evaluation pipeline applies, normalised
with the dataset's mean/std and classified by the restored checkpoint; class names come from the dataset.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax import inference, steps
from cnn_flax.data import pipeline
from cnn_flax.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CHUNK = 32  # images per forward pass (one compiled shape)


def image_files(paths: list[str]) -> list[str]:
  """The files named, and the images under the folders named (sorted); a UserError for a path that is neither."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                     if name.lower().endswith(IMAGE_EXTENSIONS))
      if not found:
        raise UserError(f"{path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
      files += found
    elif os.path.isfile(path):
      files.append(path)
    else:
      raise UserError(f"{path!r} does not exist; pass image files or folders of images")
  if not files:
    raise UserError("no images given: python predict.py --workdir W IMAGE_OR_FOLDER ...")
  return files


def read_image(path: str, transform) -> np.ndarray:
  """The image as evaluation sees it (uint8 HxWxC); a UserError naming the file when it is not an image."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as pil:  # grey stays grey, anything else becomes RGB (alpha carries no class)
      array = np.asarray(pil.convert("L" if pil.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"))
  except (UnidentifiedImageError, OSError) as e:
    raise UserError(f"{path!r} is not an image Pillow can read ({type(e).__name__}); remove it or pass images "
                    f"only") from None
  return transform({"image": array, "label": 0})["image"]  # the run's channels, size and crop


def predict(restored: inference.Restored, paths: list[str], top: int = 5) -> list[dict[str, Any]]:
  """[{"image": path, "top": [{"class": name, "index": i, "probability": p}, ...]}, ...] for every image."""
  files = image_files(paths)
  exp, config = restored.exp, restored.config
  transform = pipeline.record_transform(exp.image_shape, resize_to=config.dataset.eval_resize)
  model, variables = exp.step_config.model, inference.variables(restored)
  mean, std = exp.step_config.mean, exp.step_config.std
  probabilities = jax.jit(lambda v, x: jax.nn.softmax(
      model.apply(v, steps.normalize(x, mean, std, exp.dtype), train=False).astype(jnp.float32)))
  names = exp.dataset.class_names
  k = min(top, exp.dataset.num_classes)
  results = []
  for start in range(0, len(files), CHUNK):
    chunk = files[start:start + CHUNK]
    images = np.zeros((CHUNK, *exp.image_shape), np.uint8)  # padded: one shape, one compilation
    for i, path in enumerate(chunk):
      images[i] = read_image(path, transform)
    probs = np.asarray(probabilities(variables, images))[:len(chunk)]
    for path, p in zip(chunk, probs, strict=True):
      order = np.argsort(-p)[:k]
      results.append({"image": path, "top": [{"class": str(names[i]) if i < len(names) else str(i),
                                              "index": int(i), "probability": float(p[i])} for i in order]})
  return results


def format_block(result: dict[str, Any]) -> str:
  """One readable block: the path, then one line per class with its probability."""
  width = max(len(t["class"]) for t in result["top"])
  lines = [result["image"]]
  for rank, t in enumerate(result["top"], start=1):
    lines.append(f"  {rank}. {t['class']:<{width}}  {100 * t['probability']:6.2f}%")
  return "\n".join(lines)
