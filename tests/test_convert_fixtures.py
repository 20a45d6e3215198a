"""torchvision equivalence without torch: converted weights against recorded torchvision logits, and the layout
transforms against plain numpy references.

The fixtures (tests/fixtures/torchvision_logits.json) hold what torchvision computes for seeded numpy weights
(tests/fixtures/torchvision_state.py) on a fixed input; here the same weights are rebuilt with numpy, converted with
``convert.from_torchvision`` and run through the Flax model, so every test run compares logits for all torchvision
names, torch installed or not. Regenerate the fixtures with ``python -m tests.fixtures.make_torchvision_fixtures``
where torch is installed. The transform tests pin down the axis conventions themselves: a conversion that swapped
kernel height and width, consistently in both directions, would pass every round-trip and shape test.
"""
import functools
import json
import os

import jax
import numpy as np
import pytest

from cnn_flax import convert, models
from tests.fixtures import torchvision_state
from tests.models.model_testing import run_compiled

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "torchvision_logits.json")) as _f:
  FIXTURES = json.load(_f)


def _assert_logits_close(out, ref):
  # float32 through tens of layers: compare relative to the logit scale, not element-wise. The scale is the
  # fixture's own (ResNet-152's random-weight logits reach 1e9: the residual sums grow block by block).
  ref = np.asarray(ref, np.float32)
  scale = float(np.abs(ref).max())
  assert scale > 0 and np.ptp(ref, axis=-1).min() > 1e-3 * scale, "degenerate fixture: logits nearly constant"
  np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=1e-4 * scale)


@functools.lru_cache(maxsize=16)
def _large_array(key: str, shape: tuple[int, ...]) -> np.ndarray:
  return torchvision_state.array(key, shape)


def _state_dict(shapes):
  # The VGGs share their classifier (fc6 alone is 100M values) and many conv keys: generating the large arrays
  # once (they are read-only to the converter) saves seconds per model.
  return {k: _large_array(k, s) if np.prod(s) >= 2**20 else torchvision_state.array(k, s) for k, s in shapes.items()}


def _converted(name: str):
  assert name in FIXTURES["models"], f"no fixture for {name}: python -m tests.fixtures.make_torchvision_fixtures"
  entry = FIXTURES["models"][name]
  shapes = convert.expected_torchvision_shapes(name, num_classes=FIXTURES["num_classes"])
  assert torchvision_state.shapes_digest(shapes) == entry["shapes_digest"], "fixture made for other keys/shapes"
  state_dict = _state_dict(shapes)
  x = torchvision_state.images(name).transpose(0, 2, 3, 1)  # NCHW -> NHWC
  assert x.shape[1] == entry["input_size"]
  return convert.from_torchvision(name, state_dict, num_classes=FIXTURES["num_classes"]), x


@pytest.mark.parametrize("name", convert.TORCHVISION_NAMES)
def test_logits_match_recorded_torchvision(name):
  variables, x = _converted(name)
  num_classes, entry = FIXTURES["num_classes"], FIXTURES["models"][name]
  model = models.create(name, num_classes=num_classes)
  out = run_compiled(lambda v, x: model.apply(v, x, train=False), variables, x)
  _assert_logits_close(out, entry["logits"])
  if "train" in entry:
    # GoogLeNet's aux heads (and their fc1's (C, H, W) rows) exist only in training: dropout off, BN on batch
    # statistics. Only the aux heads are recorded: in training, inception5's BatchNorms normalise 2x2 maps of two
    # images (8 values per channel), which amplifies float32 rounding differences in the main head to about 1e-4
    # of its logit scale.
    model = models.create(name, num_classes=num_classes, dropout_rate=0.0, aux_dropout_rate=0.0)
    out = run_compiled(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0], variables, x)
    _assert_logits_close(out["aux_logits"][0], entry["train"]["aux_logits1"])
    _assert_logits_close(out["aux_logits"][1], entry["train"]["aux_logits2"])


# ------------------------------------------------------------------------------ the transforms, against numpy
def _cross_correlation_nchw(x, weight, stride, padding, groups):
  """PyTorch's conv2d by definition: x (N, C, H, W), weight (O, C / groups, kh, kw), symmetric zero padding."""
  n, c, _, _ = x.shape
  o, cg, kh, kw = weight.shape
  xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  out_h = (xp.shape[2] - kh) // stride + 1
  out_w = (xp.shape[3] - kw) // stride + 1
  out = np.zeros((n, o, out_h, out_w), np.float64)
  for f in range(o):
    g = f // (o // groups)  # the group of output channel f sees input channels g*cg .. (g+1)*cg - 1
    for i in range(out_h):
      for j in range(out_w):
        patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + kh, j * stride:j * stride + kw]
        out[:, f, i, j] = np.sum(patch * weight[f], axis=(1, 2, 3))
  return out


@pytest.mark.parametrize("kernel, stride, groups", [((3, 3), 1, 1), ((3, 3), 2, 2), ((2, 3), 1, 1)])
def test_conv_kernel_transform_matches_torch_cross_correlation(kernel, stride, groups):
  # A square kernel with distinct entries: swapping its height and width keeps every shape and changes the values.
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 4, 7, 9)).astype(np.float32)
  weight = rng.standard_normal((6, 4 // groups, *kernel)).astype(np.float32)  # OIHW
  ref = _cross_correlation_nchw(x.astype(np.float64), weight.astype(np.float64), stride, 1, groups)
  out = jax.lax.conv_general_dilated(x.transpose(0, 2, 3, 1), convert.torch_conv_to_flax(weight), (stride, stride),
                                     ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=groups)
  np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(convert.flax_conv_to_torch(convert.torch_conv_to_flax(weight)), weight)


def test_dense_transform_matches_torch_linear():
  rng = np.random.default_rng(1)
  x, weight = rng.standard_normal((3, 5)), rng.standard_normal((4, 5))  # nn.Linear: y = x @ weight.T
  np.testing.assert_allclose(x @ convert.torch_dense_to_flax(weight), x @ weight.T, rtol=1e-12)
  np.testing.assert_array_equal(convert.flax_dense_to_torch(convert.torch_dense_to_flax(weight)), weight)


def test_dense_after_flatten_permutes_rows_from_chw_to_hwc():
  # H != W and distinct values: torchvision multiplies the (C, H, W)-flattened map, the Flax models the
  # (H, W, C)-flattened one; a transform that mixed up H and W (or skipped the permutation) fails here.
  rng = np.random.default_rng(2)
  c, h, w = 3, 2, 5
  feature_map = rng.standard_normal((4, c, h, w))  # NCHW
  weight = rng.standard_normal((6, c * h * w))
  kernel = convert.torch_dense_to_flax(weight, (c, h, w))
  np.testing.assert_allclose(feature_map.transpose(0, 2, 3, 1).reshape(4, -1) @ kernel,
                             feature_map.reshape(4, -1) @ weight.T, rtol=1e-12)
  np.testing.assert_array_equal(convert.flax_dense_to_torch(kernel, (c, h, w)), weight)
