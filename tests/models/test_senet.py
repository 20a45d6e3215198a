"""SE-ResNets: exact parameter counts, the SE gate's place (on the branch, before the add), one training step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import registry, senet
from cnn_flax.models.resnet import BasicBlock, BottleneckBlock, ResNet
from tests.models.model_testing import abstract_variables, count_params, cross_entropy_step, host_variables

# Hu et al. 2018, r=16, both SE dense layers with biases (1000 classes); /work/shared/REFERENCE.md.
PUBLISHED_PARAMS = {
    "se_resnet50": 28_088_024,
    "se_resnet101": 49_326_872,
    "se_resnet152": 66_821_848,
}


def capture(model, variables, x):
  """Eval-mode output and every submodule's output (one jitted call)."""
  return jax.jit(lambda v: model.apply(v, x, train=False, capture_intermediates=True,
                                       mutable=["intermediates"]))(variables)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_matches_published(name):
  assert registry.info(name).input_size == 224
  model = registry.create(name, 1000)
  hash(model)  # hashable, so a training loop may pass it to jit as a static argument
  variables = abstract_variables(model, 224)
  assert count_params(variables["params"]) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("depth", [50])  # 101 and 152 differ only in block counts (exact totals above)
def test_se_resnet_is_resnet_plus_one_gate_per_block(depth):
  se = abstract_variables(registry.create(f"se_resnet{depth}", 1000), 64)["params"]
  plain_resnet = abstract_variables(registry.create(f"resnet{depth}", 1000), 64)["params"]
  assert set(se) == set(plain_resnet)  # same blocks, same names: a partial of ResNet, no copy
  expected_extra = 0
  for name, block in se.items():
    if not name.startswith("layer"):
      assert "se" not in block
      continue
    channels = block["conv_bn3"]["bn"]["scale"].shape[0]
    # Squeeze to C/16 and excite back to C, both with biases.
    assert block["se"]["reduce"]["kernel"].shape == (channels, channels // 16)
    assert block["se"]["reduce"]["bias"].shape == (channels // 16,)
    assert block["se"]["expand"]["kernel"].shape == (channels // 16, channels)
    assert block["se"]["expand"]["bias"].shape == (channels,)
    expected_extra += count_params(block["se"])
  assert count_params(se) == count_params(plain_resnet) + expected_extra


def test_se_resnet_defaults():
  model = senet.se_resnet50(num_classes=1000)
  assert isinstance(model, ResNet) and model.se_ratio == 16 and model.block is BottleneckBlock
  assert model.stride_on_3x3  # v1.5 (stated deviation); the authors' layout is stride_on_3x3=False
  v1 = registry.create("se_resnet50", 1000, stride_on_3x3=False)
  assert count_params(abstract_variables(v1, 64)["params"]) == PUBLISHED_PARAMS["se_resnet50"]


@pytest.mark.parametrize("block,last", [(BottleneckBlock(8, se_ratio=16), "conv_bn3"),
                                        (BasicBlock(32, se_ratio=16), "conv_bn2")])
def test_se_gate_scales_the_branch_before_the_addition(block, last):
  # Zero the excitation layer: every gate is sigmoid(0) = 0.5. If SE scales the branch after its last BN and
  # before the identity is added, the block returns relu(x + 0.5 * bn_out) exactly.
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 32))
  variables = host_variables(block, x, random_bn=True)
  expand = variables["params"]["se"]["expand"]
  expand["kernel"] = jnp.zeros_like(expand["kernel"])
  expand["bias"] = jnp.zeros_like(expand["bias"])
  out, state = capture(block, variables, x)
  branch = state["intermediates"][last]["__call__"][0]  # the branch after its last BN
  np.testing.assert_allclose(out, np.maximum(x + 0.5 * branch, 0), rtol=1e-5, atol=1e-5)
  # The alternatives give different numbers: no gate, gate after the add, gate after the ReLU.
  for wrong in (np.maximum(x + branch, 0), np.maximum(0.5 * (x + branch), 0), 0.5 * np.maximum(x + branch, 0)):
    assert not np.allclose(out, wrong, atol=1e-3)
  se_out = state["intermediates"]["se"]["__call__"][0]
  np.testing.assert_allclose(se_out, 0.5 * branch, rtol=1e-6)


def test_se_gate_is_per_channel_and_input_dependent():
  block = BottleneckBlock(8, se_ratio=16)
  x = jax.random.normal(jax.random.key(1), (2, 5, 5, 32))
  variables = host_variables(block, x, seed=3, random_bn=True)
  _, state = capture(block, variables, x)
  branch = np.asarray(state["intermediates"]["conv_bn3"]["__call__"][0])
  gated = np.asarray(state["intermediates"]["se"]["__call__"][0])
  # One gate per (image, channel), constant over space: fit it by least squares and check the fit is exact.
  gate = (gated * branch).sum(axis=(1, 2)) / (branch * branch).sum(axis=(1, 2))
  np.testing.assert_allclose(gated, gate[:, None, None, :] * branch, rtol=1e-4, atol=1e-6)
  assert np.all((gate > 0) & (gate < 1))
  assert not np.allclose(gate[0], gate[1], atol=1e-4)  # the gate depends on the image


def test_se_resnet_forward_backward_small():
  # The registered constructor with its block layout shrunk: 4 SE bottlenecks, width 8, 16 px, 2 images.
  model = registry.create("se_resnet50", 10, stage_sizes=(1, 1, 1, 1), num_filters=8)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  labels = jnp.array([1, 4])
  variables = host_variables(model, x, random_bn=True)
  (loss, _), grads = cross_entropy_step(model, variables, x, labels)
  assert np.isfinite(loss) and loss > 0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  for stage in range(1, 5):  # every SE gate receives gradient
    assert np.any(grads[f"layer{stage}_0"]["se"]["reduce"]["kernel"] != 0)
    assert np.any(grads[f"layer{stage}_0"]["se"]["expand"]["bias"] != 0)
