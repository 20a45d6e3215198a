"""On-device augmentations: shape, dtype, range, determinism, and what they actually do."""
import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.data import augment


def _images():
  return jnp.asarray(np.random.default_rng(0).integers(1, 256, (8, 6, 6, 1)), jnp.uint8)


def test_random_crop_is_a_translation_with_zero_fill():
  images = _images()
  out = augment.random_crop(images, jax.random.key(0), padding=2)
  assert out.shape == images.shape and out.dtype == jnp.uint8
  for before, after in zip(np.asarray(images), np.asarray(out)):
    matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.array_equal(np.roll(np.pad(before, ((2, 2), (2, 2), (0, 0))), (dy, dx), (0, 1))[2:-2, 2:-2],
                                 after)]
    assert matches, "each output must be its input shifted by at most the padding"


def test_random_crop_is_deterministic_per_key_and_varies_across_keys():
  images = _images()
  a = augment.random_crop(images, jax.random.key(1), 3)
  b = augment.random_crop(images, jax.random.key(1), 3)
  c = augment.random_crop(images, jax.random.key(2), 3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_random_flip_mirrors_some_images_only():
  images = _images()
  out = np.asarray(augment.random_flip(images, jax.random.key(0)))
  flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, np.asarray(images))]
  kept = [np.array_equal(o, i) for o, i in zip(out, np.asarray(images))]
  assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_no_augmentation_is_the_identity():
  images = _images()
  np.testing.assert_array_equal(augment.augment_batch(images, jax.random.key(0)), images)
