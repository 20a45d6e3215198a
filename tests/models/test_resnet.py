"""ResNets: exact parameter counts, shortcut/plain/stride/padding structure, one real training step.

Counts and shapes use ``jax.eval_shape`` (tracing only, no compilation). Numeric checks run tiny networks whose
variables are filled from numpy (``host_variables``) rather than by ``init``: compiling threefry initialisers
costs seconds on CPU; ``init`` itself is exercised on single blocks with a cheap ``rbg`` key.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import registry
from cnn_flax.models.layers import ConvBN
from cnn_flax.models.resnet import BasicBlock, BottleneckBlock, CifarResNet, ResNet, option_a_shortcut
from tests.models.model_testing import (
  abstract_intermediates,
  abstract_variables,
  batch_norm_settings,
  count_params,
  cross_entropy_step,
  host_variables,
  out_shape,
)

# He et al. 2016 / torchvision (1000 classes) and He et al. 2016 sec. 4.2 (10 classes); /work/shared/REFERENCE.md.
PUBLISHED_PARAMS = {
    "resnet18": (1000, 11_689_512),
    "resnet34": (1000, 21_797_672),
    "resnet50": (1000, 25_557_032),
    "resnet101": (1000, 44_549_160),
    "resnet152": (1000, 60_192_808),
    "resnet20": (10, 269_722),
    "resnet32": (10, 464_154),
    "resnet44": (10, 658_586),
    "resnet56": (10, 853_018),
    "resnet110": (10, 1_727_962),
}


def zero_last_bn(params, last):
  """Zeroes scale and bias of each block's last BN (in place): the residual branch becomes exactly 0."""
  for block in params.values():
    if isinstance(block, dict) and last in block:
      block[last]["bn"]["scale"] = jnp.zeros_like(block[last]["bn"]["scale"])
      block[last]["bn"]["bias"] = jnp.zeros_like(block[last]["bn"]["bias"])
  return params


# One compile per module (modules are hashable): cheaper than op-by-op dispatch, which compiles every primitive.
_apply = jax.jit(lambda model, v, x: model.apply(v, x, train=False), static_argnums=0)
_apply_capture = jax.jit(lambda model, v, x: model.apply(v, x, train=False, capture_intermediates=True,
                                                         mutable=["intermediates"]), static_argnums=0)


def apply_eval(model, variables, x, capture=False):
  return (_apply_capture if capture else _apply)(model, variables, x)


def scale_inits(model, size):
  """BN scale initialiser of every ConvBN, keyed by module path: recorded while tracing ``init`` (no compile)."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, ConvBN) and context.method_name == "__call__":
      seen["/".join(context.module.path)] = context.module.scale_init
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    abstract_variables(model, size)
  return {path: np.asarray(init(jax.random.key(0), (3,))) for path, init in seen.items()}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_matches_published(name):
  num_classes, expected = PUBLISHED_PARAMS[name]
  info = registry.info(name)
  model = registry.create(name, num_classes)
  hash(model)  # hashable, so a training loop may pass it to jit as a static argument
  variables = abstract_variables(model, info.input_size)
  assert "batch_stats" in variables  # counted separately: running statistics are not trainable
  assert count_params(variables["params"]) == expected


def test_registry_metadata():
  for name in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]:
    assert registry.info(name).input_size == 224 and registry.info(name).in_channels == 3
  for name in ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]:
    assert registry.info(name).input_size == 32 and registry.info(name).in_channels == 3


# ----- option-A shortcuts and plain networks -----

def test_option_a_shortcuts_hold_no_parameters():
  residual = abstract_variables(registry.create("resnet20", 10), 32)["params"]
  plain = abstract_variables(registry.create("resnet20", 10, plain=True), 32)["params"]
  assert count_params(residual) == count_params(plain) == 269_722
  assert not any("downsample" in block for name, block in residual.items() if name.startswith("layer"))


def test_option_a_shortcut_subsamples_and_zero_pads():
  x = jnp.arange(2 * 4 * 4 * 16, dtype=jnp.float32).reshape(2, 4, 4, 16)
  y = option_a_shortcut(x, 32, 2)
  assert y.shape == (2, 2, 2, 32)
  np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
  assert not np.any(y[..., :8]) and not np.any(y[..., 24:])


def _block_output(block, x, last, zero_branch=True):
  variables = host_variables(block, x, random_bn=True)
  if zero_branch:
    zero_last_bn({"block": variables["params"]}, last)
  return apply_eval(block, variables, x)


def test_shortcut_is_added_to_the_block_output():
  # With the last BN's scale and bias at zero the branch is exactly zero, so the block returns relu(shortcut).
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  block = BasicBlock(32, strides=2, shortcut="A")
  expected = np.zeros((2, 4, 4, 32), np.float32)
  expected[..., 8:24] = np.maximum(np.asarray(x)[:, ::2, ::2, :], 0)
  np.testing.assert_allclose(_block_output(block, x, "conv_bn2"), expected, atol=1e-6)
  # The same block without shortcuts has nothing left: relu(0) everywhere.
  np.testing.assert_array_equal(_block_output(block.clone(plain=True), x, "conv_bn2"), 0.0)
  # With a live branch: relu(shortcut + branch) for the residual block, relu(branch) for the plain one.
  for plain in (False, True):
    b = block.clone(plain=plain)
    out, state = apply_eval(b, host_variables(b, x, random_bn=True), x, capture=True)
    branch = state["intermediates"]["conv_bn2"]["__call__"][0]
    shortcut = 0.0 if plain else option_a_shortcut(x, 32, 2)
    np.testing.assert_allclose(out, np.maximum(shortcut + branch, 0), rtol=1e-5, atol=1e-5)
    assert np.any(branch < 0)
    wrong = branch if plain else np.maximum(branch, 0)  # plain without its ReLU / residual without its shortcut
    assert not np.allclose(out, wrong, atol=1e-3)


@pytest.mark.parametrize("block,last", [(BasicBlock(16), "conv_bn2"), (BottleneckBlock(4), "conv_bn3")])
def test_identity_shortcut_adds_input(block, last):
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 16))
  np.testing.assert_allclose(_block_output(block, x, last), np.maximum(x, 0), atol=1e-6)
  np.testing.assert_array_equal(_block_output(block.clone(plain=True), x, last), 0.0)


def test_plain_network_has_no_path_around_the_branches():
  # Zero every branch: the residual net still sees its input through the shortcuts, the plain net sees nothing,
  # so its logits are the dense bias whatever the image.
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  for plain in (False, True):
    model = CifarResNet(stage_sizes=(1, 1, 1), plain=plain)
    variables = host_variables(model, x, random_bn=True)
    zero_last_bn(variables["params"], "conv_bn2")
    logits = apply_eval(model, variables, x)
    if plain:
      np.testing.assert_allclose(logits, np.broadcast_to(variables["params"]["fc"]["bias"], (2, 10)), atol=1e-6)
    else:
      assert not np.allclose(logits[0], logits[1], atol=1e-3)


def test_plain_imagenet_resnet_drops_projection_shortcuts():
  params = abstract_variables(registry.create("resnet18", 1000, plain=True), 64)["params"]
  assert not any("downsample" in block for name, block in params.items() if name.startswith("layer"))
  # torchvision's three projections (conv 1x1 + BN) in stages 2-4 are the only difference.
  projections = sum(c_in * c_out + 2 * c_out for c_in, c_out in [(64, 128), (128, 256), (256, 512)])
  assert count_params(params) == 11_689_512 - projections


# ----- zero-init, stride placement, padding, shapes -----

def test_zero_init_last_bn_initialises_scale_to_zero():
  # A real init of one block (cheap 'rbg' key): only the branch's last BN scale starts at zero.
  block = BottleneckBlock(4, strides=2, zero_init_last_bn=True)
  x = jnp.ones((1, 4, 4, 8))
  params = jax.jit(lambda k: block.init(k, x, train=False))(jax.random.key(0, impl="rbg"))["params"]
  np.testing.assert_array_equal(params["conv_bn3"]["bn"]["scale"], 0.0)
  for name in ("conv_bn1", "conv_bn2", "downsample"):
    np.testing.assert_array_equal(params[name]["bn"]["scale"], 1.0)


@pytest.mark.parametrize("name,last", [("resnet18", "conv_bn2"), ("resnet50", "conv_bn3"), ("resnet20", "conv_bn2")])
def test_zero_init_last_bn_reaches_every_block(name, last):
  for zero in (False, True):
    inits = scale_inits(registry.create(name, 10, zero_init_last_bn=zero), 32)
    zeroed = {path for path, value in inits.items() if not np.any(value)}
    assert all(np.all(value == 1) for path, value in inits.items() if path not in zeroed)
    blocks = {path.split("/")[0] for path in inits if path.startswith("layer")}
    assert len(blocks) == {"resnet18": 8, "resnet50": 16, "resnet20": 9}[name]
    assert zeroed == ({f"{block}/{last}" for block in blocks} if zero else set())


def test_bottleneck_stride_placement_v1_vs_v1_5():
  v1_5 = abstract_intermediates(registry.create("resnet50", 1000), 224)
  v1 = abstract_intermediates(registry.create("resnet50", 1000, stride_on_3x3=False), 224)
  # v1.5 (default): the 1x1 keeps 56x56 and the 3x3 subsamples; v1: the 1x1 already subsamples.
  assert out_shape(v1_5, "layer2_0", "conv_bn1") == (1, 56, 56, 128)
  assert out_shape(v1, "layer2_0", "conv_bn1") == (1, 28, 28, 128)
  for tree in (v1, v1_5):
    assert out_shape(tree, "layer2_0", "conv_bn2") == (1, 28, 28, 128)
    assert out_shape(tree, "layer2_0", "downsample") == (1, 28, 28, 512)
  for stage, blocks in enumerate([3, 4, 6, 3], start=1):
    key = f"layer{stage}_{blocks - 1}"
    assert out_shape(v1, key) == out_shape(v1_5, key)


@pytest.mark.parametrize("name,widths", [("resnet18", [64, 128, 256, 512]), ("resnet50", [256, 512, 1024, 2048])])
def test_stage_output_shapes_at_224(name, widths):
  tree = abstract_intermediates(registry.create(name, 1000), 224)
  assert out_shape(tree, "stem") == (1, 112, 112, 64)
  blocks = {"resnet18": [2, 2, 2, 2], "resnet50": [3, 4, 6, 3]}[name]
  for stage, (n, width, size) in enumerate(zip(blocks, widths, [56, 28, 14, 7], strict=True), start=1):
    assert out_shape(tree, f"layer{stage}_{n - 1}") == (1, size, size, width)
  assert out_shape(tree) == (1, 1000)


def test_cifar_stage_output_shapes():
  tree = abstract_intermediates(registry.create("resnet56", 10), 32)
  assert out_shape(tree, "stem") == (1, 32, 32, 16)
  for stage, (width, size) in enumerate(zip([16, 32, 64], [32, 16, 8], strict=True), start=1):
    assert out_shape(tree, f"layer{stage}_8") == (1, size, size, width)


def test_stem_uses_pytorch_symmetric_padding():
  # torchvision pads the 7x7/2 conv by 3 and the 3x3/2 max-pool by 1 on every side; Flax 'SAME' would pad (2, 3)
  # and (0, 1) on these even sizes and sample different pixels.
  model = ResNet(stage_sizes=(1, 1, 1, 1), num_filters=8, num_classes=10)
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 3))
  variables = host_variables(model, x, random_bn=True)
  zero_last_bn(variables["params"], "conv_bn2")
  _, state = apply_eval(model, variables, x, capture=True)
  inter = state["intermediates"]
  kernel = variables["params"]["stem"]["conv"]["kernel"]
  conv = lambda pad: jax.lax.conv_general_dilated(x, kernel, (2, 2), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  stem_conv = inter["stem"]["conv"]["__call__"][0]
  np.testing.assert_allclose(stem_conv, conv(((3, 3), (3, 3))), rtol=1e-5, atol=1e-5)
  assert not np.allclose(stem_conv, conv("SAME"), atol=1e-3)
  # layer1_0 has an identity shortcut and a zeroed branch, so it returns relu(max-pool(stem)) = max-pool(stem).
  stem = inter["stem"]["__call__"][0]
  pooled = inter["layer1_0"]["__call__"][0]
  pool = lambda pad: jax.lax.reduce_window(stem, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                           pad if isinstance(pad, str) else ((0, 0), pad, pad, (0, 0)))
  np.testing.assert_allclose(pooled, pool((1, 1)), atol=1e-6)
  assert not np.allclose(pooled, pool("SAME"), atol=1e-3)


@pytest.mark.parametrize("name", ["resnet50", "resnet20"])
@pytest.mark.parametrize("train", [False, True])
def test_batch_norm_settings(name, train):
  # Every BatchNorm: Flax momentum 0.9 (PyTorch 0.1), torchvision's epsilon 1e-5, batch statistics only in training.
  seen = batch_norm_settings(registry.create(name, 10), 32, train)
  assert len(seen) == {"resnet50": 1 + 3 * 16 + 4, "resnet20": 1 + 2 * 9}[name]  # stem + blocks + projections
  assert set(seen) == {(0.9, 1e-5, not train)}


def test_dtype_is_compute_dtype_params_stay_float32():
  model = registry.create("resnet20", 10, dtype=jnp.bfloat16)
  variables = abstract_variables(model, 32)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), train=False), variables)
  assert logits.dtype == jnp.bfloat16 and logits.shape == (2, 10)


def test_resnet20_forward_backward():
  model = registry.create("resnet20", 10)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  labels = jnp.array([3, 7])
  variables = host_variables(model, x, random_bn=True)
  (loss, updates), grads = cross_entropy_step(model, variables, x, labels)
  assert np.isfinite(loss) and loss > 0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.any(grads["stem"]["conv"]["kernel"] != 0)  # gradient reaches the first layer
  # Training mode updated the running statistics: new = 0.9 old + 0.1 batch.
  old = variables["batch_stats"]["stem"]["bn"]["mean"]
  assert not np.allclose(updates["batch_stats"]["stem"]["bn"]["mean"], old)
