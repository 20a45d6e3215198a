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


def _coordinate_image(h=200, w=250):
  """Channel 0 holds each pixel's row, channel 1 its column: a crop of a resized copy reads back where it came
  from, because bilinear resampling (antialiased or not) of a linear ramp is the same ramp at the new scale."""
  image = np.zeros((h, w, 3), np.uint8)
  image[..., 0] = np.arange(h)[:, None]
  image[..., 1] = np.arange(w)[None, :]
  return image


@pytest.mark.parametrize("seed", range(6))
def test_scale_jitter_resizes_to_the_drawn_shorter_side_and_crops_where_the_rng_says(seed):
  h, w, size, scale = 200, 250, 64, (100, 140)
  out = transforms.scale_jitter_crop(_coordinate_image(h, w), size, np.random.default_rng(seed), scale=scale)
  # The draws, in order: the shorter side (both ends of `scale` included), then the crop's top and left corner.
  rng = np.random.default_rng(seed)
  shorter = int(rng.integers(scale[0], scale[1] + 1))
  resized_h, resized_w = shorter, round(w * shorter / h)
  top, left = int(rng.integers(0, resized_h - size + 1)), int(rng.integers(0, resized_w - size + 1))
  # Source coordinate of each output pixel centre (pixel centres at i + 0.5), clamped at the image border.
  rows = np.clip((top + np.arange(size) + 0.5) * h / resized_h - 0.5, 0, h - 1)
  cols = np.clip((left + np.arange(size) + 0.5) * w / resized_w - 0.5, 0, w - 1)
  assert out.shape == (size, size, 3) and out.dtype == np.uint8
  # Within rounding: a shorter side one pixel off, or a crop one pixel off, is more than a whole value away.
  assert np.abs(out[..., 0] - rows[:, None]).max() <= 0.5 + 1e-6
  assert np.abs(out[..., 1] - cols[None, :]).max() <= 0.5 + 1e-6
  assert not out[..., 2].any()


def test_eval_resize_then_centre_crop():
  image = np.zeros((100, 200, 1), np.uint8)
  image[:, 75:125] = 255  # a centred stripe half as wide as the image is high
  out = transforms.eval_resize_crop(image, 40, resize_to=50)
  assert out.shape == (40, 40, 1)
  # Shorter side 100 -> 50: the stripe is 25 px wide in a 100 px wide image, centred; the 40 px crop keeps it.
  assert out[:, 20].min() == 255 and out[:, 0].max() == 0


def test_match_channels_grey_to_rgb_repeats_the_grey_value():
  grey = np.array([[[0], [7]], [[128], [255]]], np.uint8)
  out = transforms.match_channels(grey, 3)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, [[[0, 0, 0], [7, 7, 7]], [[128, 128, 128], [255, 255, 255]]])
  np.testing.assert_array_equal(transforms.match_channels(grey[..., 0], 3), out)  # a 2-D (H, W) image too


def test_match_channels_rgb_and_rgba_to_grey_is_the_rounded_mean_of_r_g_b():
  rgb = np.array([[[1, 2, 2], [0, 0, 1], [10, 20, 30]], [[255, 255, 254], [0, 0, 0], [200, 100, 1]]], np.uint8)
  # Means 1.67, 0.33, 20, 254.67, 0, 100.33 (no sum overflows uint8 arithmetic).
  expected = [[[2], [0], [20]], [[255], [0], [100]]]
  out = transforms.match_channels(rgb, 1)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, expected)
  alpha = np.array([[[0], [255], [9]], [[3], [128], [77]]], np.uint8)
  np.testing.assert_array_equal(transforms.match_channels(np.concatenate([rgb, alpha], -1), 1), expected)


def test_match_channels_rgba_to_rgb_drops_alpha_and_matching_channels_pass_through():
  rgba = _image(4, 5, 4)
  np.testing.assert_array_equal(transforms.match_channels(rgba, 3), rgba[..., :3])
  rgb = _image(4, 5, 3)
  np.testing.assert_array_equal(transforms.match_channels(rgb, 3), rgb)
  with pytest.raises(ValueError, match="cannot convert 3 channels to 2"):
    transforms.match_channels(rgb, 2)


@pytest.mark.parametrize("fn", [
    lambda rng: transforms.random_resized_crop(_image(), 24, rng),
    lambda rng: transforms.scale_jitter_crop(_image(100, 150), 32, rng, scale=(40, 80)),
])
def test_random_host_transforms_are_deterministic_per_generator(fn):
  a, b, c = fn(np.random.default_rng(1)), fn(np.random.default_rng(1)), fn(np.random.default_rng(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c) and a.dtype == np.uint8
