"""Augmentations that run on the device, inside the jitted train step (cheap for small images).

Each takes a uint8 NHWC batch and a PRNG key and returns a batch of the same shape and dtype, so the
normalisation that follows is unchanged.
"""
from __future__ import annotations

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
