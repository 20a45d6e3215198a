"""On-device augmentations: shape, dtype, range, determinism, and what they actually do."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.data import augment


def _images():
  return jnp.asarray(np.random.default_rng(0).integers(1, 256, (8, 6, 6, 1)), jnp.uint8)


def test_random_crop_is_a_translation_with_zero_fill():
  images = _images()
  out = augment.random_crop(images, jax.random.key(0), padding=2)
  assert out.shape == images.shape and out.dtype == jnp.uint8
  for before, after in zip(np.asarray(images), np.asarray(out), strict=True):
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
  flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, np.asarray(images), strict=True)]
  kept = [np.array_equal(o, i) for o, i in zip(out, np.asarray(images), strict=True)]
  assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_no_augmentation_is_the_identity():
  images = _images()
  np.testing.assert_array_equal(augment.augment_batch(images, jax.random.key(0)), images)


def test_pca_lighting_shifts_each_image_by_one_colour_and_is_off_at_zero():
  images = jnp.full((4, 3, 3, 3), 100.0)
  out = np.asarray(augment.pca_lighting(images, jax.random.key(0), 0.1))
  assert out.shape == images.shape and out.dtype == np.float32
  per_image = out - 100.0
  np.testing.assert_allclose(per_image, per_image[:, :1, :1, :] * np.ones_like(per_image), atol=1e-5)
  assert np.abs(per_image).max() > 0
  np.testing.assert_array_equal(augment.pca_lighting(images, jax.random.key(0), 0.0), images)


def test_pca_lighting_is_alexnets_noise_along_the_imagenet_eigenvectors():
  """Krizhevsky et al. 2012, sec. 4.1: add [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T with a_i ~ N(0, sigma), in 0-1 pixel
  units. Reading the a_i back from many shifts must give independent N(0, sigma) draws for each eigenvector."""
  sigma = 0.1
  images = jnp.zeros((4000, 1, 1, 3))
  lighting = jax.jit(augment.pca_lighting, static_argnums=2)
  shifts = np.asarray(lighting(images, jax.random.key(0), sigma), np.float64)[:, 0, 0, :] / 255.0
  eigvec = np.asarray(augment.IMAGENET_PCA_EIGVEC, np.float64)  # eigenvectors in its columns
  eigval = np.asarray(augment.IMAGENET_PCA_EIGVAL, np.float64)
  alphas = np.linalg.solve(eigvec, shifts.T).T / eigval
  np.testing.assert_allclose(alphas.std(0), sigma, rtol=0.05)  # 4,000 draws: the std is known to about 1.1%
  np.testing.assert_allclose(alphas.mean(0), 0.0, atol=0.01)
  np.testing.assert_allclose(np.corrcoef(alphas.T), np.eye(3), atol=0.06)
  # Grey images get the mean of the RGB shift the same key gives.
  grey = np.asarray(lighting(jnp.zeros((4000, 1, 1, 1)), jax.random.key(0), sigma))[:, 0, 0, 0]
  np.testing.assert_allclose(grey, shifts.mean(-1) * 255.0, rtol=1e-5, atol=1e-4)


def test_mixup_blends_images_and_targets_with_one_weight():
  images = jnp.stack([jnp.zeros((2, 2, 1)), jnp.ones((2, 2, 1))])
  targets = jnp.eye(2)
  mixed, soft = augment.mixup(images, targets, jax.random.key(0), 0.4)
  lam = float(soft[0, 0])
  assert 0 < lam < 1
  np.testing.assert_allclose(np.asarray(mixed[0]), 1 - lam, rtol=1e-5)  # lam of image 0 (zeros), 1 - lam of 1
  np.testing.assert_allclose(np.asarray(mixed[1]), lam, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(soft), [[lam, 1 - lam], [1 - lam, lam]], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(soft).sum(1), 1.0, rtol=1e-6)


def test_cutmix_targets_match_the_pasted_area():
  images = jnp.stack([jnp.zeros((8, 8, 1)), jnp.ones((8, 8, 1))])
  mixed, soft = augment.cutmix(images, jnp.eye(2), jax.random.key(3), 1.0)
  pasted = float(np.asarray(mixed[0]).mean())  # share of image 0 now taken from image 1
  np.testing.assert_allclose(float(soft[0, 1]), pasted, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(soft).sum(1), 1.0, rtol=1e-6)


def test_mix_batch_is_the_identity_when_both_are_off():
  images, targets = _images().astype(jnp.float32), jnp.eye(8)
  out, soft = augment.mix_batch(images, targets, jax.random.key(0))
  np.testing.assert_array_equal(out, images)
  np.testing.assert_array_equal(soft, targets)


def _float_images():
  return _images().astype(jnp.float32)


@pytest.mark.parametrize("name, fn", [
    ("crop", lambda key: augment.random_crop(_images(), key, 2)),
    ("flip", lambda key: augment.random_flip(_images(), key)),
    ("lighting", lambda key: augment.pca_lighting(_float_images(), key, 0.1)),
    ("mixup", lambda key: augment.mixup(_float_images(), jnp.eye(8), key, 0.4)),
    ("cutmix", lambda key: augment.cutmix(_float_images(), jnp.eye(8), key, 1.0)),
    ("both", lambda key: augment.mix_batch(_float_images(), jnp.eye(8), key, mixup_alpha=0.2, cutmix_alpha=1.0)),
])
def test_device_augmentations_keep_shape_dtype_range_and_are_deterministic(name, fn):
  first, again, other = fn(jax.random.key(7)), fn(jax.random.key(7)), fn(jax.random.key(8))
  leaves = jax.tree.leaves(first)
  images = leaves[0]
  assert images.shape == _images().shape
  assert images.dtype == (jnp.uint8 if name in ("crop", "flip") else jnp.float32)
  if name != "lighting":  # crops, flips and convex mixes stay within the input's range
    assert float(images.min()) >= 0 and float(images.max()) <= float(_images().max())
  for a, b in zip(leaves, jax.tree.leaves(again), strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves, jax.tree.leaves(other), strict=True))
