"""Host-side transforms: shape, dtype, range, determinism, and the geometry each paper prescribes."""
import numpy as np
import pytest

from cnn_flax.data import transforms


def _image(h=60, w=90, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def test_random_resized_crop_shape_dtype_and_determinism():
  image = _image()
  a = transforms.random_resized_crop(image, 24, np.random.default_rng(5))
  b = transforms.random_resized_crop(image, 24, np.random.default_rng(5))
  c = transforms.random_resized_crop(image, 24, np.random.default_rng(6))
  assert a.shape == (24, 24, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_random_resized_crop_covers_the_requested_area_range():
  # A 1-pixel-per-value ramp lets the crop's extent be read back from the output's value range.
  ramp = np.tile(np.arange(200, dtype=np.uint8)[None, :, None], (200, 1, 1))
  widths = []
  for seed in range(40):
    out = transforms.random_resized_crop(ramp, 50, np.random.default_rng(seed), area=(0.25, 0.25), aspect=(1, 1))
    widths.append(int(out.max()) - int(out.min()) + 1)
  assert all(95 <= w <= 105 for w in widths)  # sqrt(0.25) * 200 = 100 columns


def test_scale_jitter_crops_from_a_rescaled_image():
  image = _image(100, 150)
  out = transforms.scale_jitter_crop(image, 32, np.random.default_rng(0), scale=(40, 60))
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_eval_resize_then_centre_crop():
  image = np.zeros((100, 200, 1), np.uint8)
  image[:, 75:125] = 255  # a centred stripe half as wide as the image is high
  out = transforms.eval_resize_crop(image, 40, resize_to=50)
  assert out.shape == (40, 40, 1)
  # Shorter side 100 -> 50: the stripe is 25 px wide in a 100 px wide image, centred; the 40 px crop keeps it.
  assert out[:, 20].min() == 255 and out[:, 0].max() == 0


@pytest.mark.parametrize("have, want", [(1, 3), (3, 1), (4, 3), (3, 3)])
def test_match_channels(have, want):
  out = transforms.match_channels(_image(5, 5, have), want)
  assert out.shape == (5, 5, want) and out.dtype == np.uint8


@pytest.mark.parametrize("fn", [
    lambda rng: transforms.random_resized_crop(_image(), 24, rng),
    lambda rng: transforms.scale_jitter_crop(_image(100, 150), 32, rng, scale=(40, 80)),
])
def test_random_host_transforms_are_deterministic_per_generator(fn):
  a, b, c = fn(np.random.default_rng(1)), fn(np.random.default_rng(1)), fn(np.random.default_rng(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c) and a.dtype == np.uint8
