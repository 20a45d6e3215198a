"""Augmentations that run on the device, inside the jitted train step (cheap for small images).

Each takes a uint8 NHWC batch and a PRNG key and returns a batch of the same shape and dtype, so the
normalisation that follows is unchanged.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def random_crop(images: jax.Array, key: jax.Array, padding: int) -> jax.Array:
  """Zero-pads each image by `padding` pixels and crops back at a random offset (a random translation)."""
  if padding <= 0:
    return images
  n, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)
  crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, image.shape[-1]))
  return jax.vmap(crop)(padded, offsets)


def random_flip(images: jax.Array, key: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)


def augment_batch(images: jax.Array, key: jax.Array, *, crop_padding: int = 0, flip: bool = False) -> jax.Array:
  crop_key, flip_key = jax.random.split(key)
  images = random_crop(images, crop_key, crop_padding)
  return random_flip(images, flip_key) if flip else images


# Principal components of ImageNet RGB pixels (values in [0, 1]), as used for AlexNet's colour noise
# (Krizhevsky et al. 2012, sec. 4.1); the figures are the widely used ones from fb.resnet.torch.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))


def pca_lighting(images: jax.Array, key: jax.Array, sigma: float) -> jax.Array:
  """AlexNet's lighting noise: adds sum_i alpha_i * lambda_i * p_i to every pixel, alpha_i ~ N(0, sigma).

  Takes float images in pixel units (0..255). Grey images get the mean of the RGB shift.
  """
  if sigma <= 0:
    return images
  alpha = jax.random.normal(key, (images.shape[0], 3)) * sigma
  shift = (alpha * jnp.asarray(IMAGENET_PCA_EIGVAL)) @ jnp.asarray(IMAGENET_PCA_EIGVEC).T * 255.0
  if images.shape[-1] == 1:
    shift = shift.mean(-1, keepdims=True)
  return images + shift[:, None, None, :].astype(images.dtype)


def mixup(images: jax.Array, targets: jax.Array, key: jax.Array, alpha: float):
  """Mixup (Zhang et al. 2018): each example blended with its partner in the reversed batch."""
  lam = jax.random.beta(key, alpha, alpha)
  mixed = lam * images + (1 - lam) * images[::-1]
  return mixed.astype(images.dtype), lam * targets + (1 - lam) * targets[::-1]


def cutmix(images: jax.Array, targets: jax.Array, key: jax.Array, alpha: float):
  """CutMix (Yun et al. 2019): a random box from the partner image; targets weighted by the box's area."""
  lam_key, y_key, x_key = jax.random.split(key, 3)
  lam = jax.random.beta(lam_key, alpha, alpha)
  _, h, w, _ = images.shape
  cut_h, cut_w = jnp.sqrt(1 - lam) * h, jnp.sqrt(1 - lam) * w
  cy, cx = jax.random.uniform(y_key) * h, jax.random.uniform(x_key) * w
  top, bottom = jnp.clip(cy - cut_h / 2, 0, h), jnp.clip(cy + cut_h / 2, 0, h)
  left, right = jnp.clip(cx - cut_w / 2, 0, w), jnp.clip(cx + cut_w / 2, 0, w)
  rows, cols = jnp.arange(h)[:, None] + 0.5, jnp.arange(w)[None, :] + 0.5
  box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  mixed = jnp.where(box[None, :, :, None], images[::-1], images)
  kept = 1 - box.mean()  # the exact share of the original image after clipping to the borders
  return mixed, kept * targets + (1 - kept) * targets[::-1]


def mix_batch(images: jax.Array, targets: jax.Array, key: jax.Array, *, mixup_alpha: float = 0.0,
              cutmix_alpha: float = 0.0):
  """Mixup and/or CutMix on a batch with one-hot (or soft) targets; with both on, one of them per batch."""
  choice_key, mix_key = jax.random.split(key)
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = jax.random.bernoulli(choice_key)
    return jax.lax.cond(use_cutmix, lambda: cutmix(images, targets, mix_key, cutmix_alpha),
                        lambda: mixup(images, targets, mix_key, mixup_alpha))
  if mixup_alpha > 0:
    return mixup(images, targets, mix_key, mixup_alpha)
  if cutmix_alpha > 0:
    return cutmix(images, targets, mix_key, cutmix_alpha)
  return images, targets


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
  """The device augmentations a run uses (fields named as in the config section `augment`).

  The train step calls `pixels` on the uint8 batch before normalisation and `mix` after it; a new augmentation
  is a field here (and in `cnn_flax.schema`) plus its use in one of the two methods.
  """
  crop_padding: int = 0
  flip: bool = False
  pca_lighting: float = 0.0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0

  def pixels(self, images: jax.Array, geometry_key: jax.Array, colour_key: jax.Array) -> jax.Array:
    """Random crop and flip (uint8), then PCA lighting; returns float32 images in pixel units."""
    images = augment_batch(images, geometry_key, crop_padding=self.crop_padding, flip=self.flip)
    return pca_lighting(images.astype(jnp.float32), colour_key, self.pca_lighting)

  def mix(self, images: jax.Array, targets: jax.Array, key: jax.Array):
    """Mixup / CutMix of normalised images and their one-hot targets."""
    return mix_batch(images, targets, key, mixup_alpha=self.mixup_alpha, cutmix_alpha=self.cutmix_alpha)
