"""Per-example image transforms that run on the host, in Grain (worker processes when num_workers > 0).

These are the geometric augmentations of the ImageNet papers, which need the full-resolution image:
Inception-style random-resized crop, VGG scale jitter, and the evaluation resize + centre crop. Every random
transform takes a numpy Generator that Grain seeds per example, so results are reproducible and resumable.
Input and output are uint8 HxWxC arrays; Pillow does the resizing (bilinear, antialiased on downscaling).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _to_pil(image: np.ndarray) -> Image.Image:
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(pil: Image.Image, channels: int) -> np.ndarray:
  array = np.asarray(pil)
  return array[..., None] if array.ndim == 2 else array


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  if image.shape[:2] == (height, width):
    return image
  return _from_pil(_to_pil(image).resize((width, height), Image.BILINEAR), image.shape[-1])


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
  h, w = image.shape[:2]
  scale = size / min(h, w)
  return resize(image, max(size, round(h * scale)), max(size, round(w * scale)))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  h, w = image.shape[:2]
  top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
  return image[top:top + size, left:left + size]


def eval_resize_crop(image: np.ndarray, size: int, resize_to: int = 0) -> np.ndarray:
  """Evaluation view: shorter side to `resize_to` then a centre `size` crop; `resize_to` 0 resizes to size x size."""
  if not resize_to:
    return resize(image, size, size)
  return resize(center_crop(resize_shorter_side(image, resize_to), size), size, size)


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator, area=(0.08, 1.0),
                        aspect=(3 / 4, 4 / 3), attempts: int = 10) -> np.ndarray:
  """Inception (Szegedy et al. 2015) crop: a random window of `area` of the image and `aspect` ratio, resized.

  The aspect ratio is drawn log-uniformly. After `attempts` failures the whole image's central crop at the
  nearest allowed aspect ratio is used, as in the common implementations.
  """
  h, w = image.shape[:2]
  for _ in range(attempts):
    target_area = rng.uniform(*area) * h * w
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    cw = int(round(math.sqrt(target_area * ratio)))
    ch = int(round(math.sqrt(target_area / ratio)))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
      return resize(image[top:top + ch, left:left + cw], size, size)
  ratio = min(max(w / h, aspect[0]), aspect[1])
  cw, ch = (w, int(round(w / ratio))) if w / h < ratio else (int(round(h * ratio)), h)
  cw, ch = min(cw, w), min(ch, h)
  top, left = (h - ch) // 2, (w - cw) // 2
  return resize(image[top:top + ch, left:left + cw], size, size)


def scale_jitter_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                      scale=(256, 512)) -> np.ndarray:
  """VGG (Simonyan & Zisserman 2015) multi-scale training: shorter side drawn from [S_min, S_max], random crop."""
  shorter = int(rng.integers(scale[0], scale[1] + 1))
  resized = resize_shorter_side(image, max(shorter, size))
  h, w = resized.shape[:2]
  top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
  return resized[top:top + size, left:left + size]


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """Grey to RGB by repetition, RGB(A) to grey by averaging, RGBA to RGB by dropping alpha."""
  if image.ndim == 2:
    image = image[..., None]
  have = image.shape[-1]
  if have == channels:
    return image
  if channels == 3 and have == 1:
    return np.repeat(image, 3, axis=-1)
  if channels == 3 and have == 4:
    return image[..., :3]
  if channels == 1:
    return np.round(image[..., :3].mean(-1, keepdims=True)).astype(np.uint8)
  raise ValueError(f"cannot convert {have} channels to {channels}")
