"""DenseNets: exact parameter counts, pre-activation order, dense connectivity, shapes, one training step.

Numeric checks compare tiny networks against a plain-numpy re-implementation of the paper's equations, using
variables filled from numpy (no ``init`` compile) with random BN statistics so that BN is not an identity.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import registry
from cnn_flax.models.densenet import DenseLayer, DenseNet, Transition
from tests.models.model_testing import (
  abstract_intermediates,
  abstract_variables,
  batch_norm_settings,
  count_params,
  cross_entropy_step,
  host_variables,
  out_shape,
)

# Huang et al. 2017 / torchvision (1000 classes) and the paper's CIFAR models (10 classes); REFERENCE.md.
PUBLISHED_PARAMS = {
    "densenet121": (1000, 7_978_856),
    "densenet169": (1000, 14_149_480),
    "densenet201": (1000, 20_013_928),
    "densenet161": (1000, 28_681_000),
    "densenet_bc_100": (10, 769_162),
    "densenet40": (10, 1_019_722),
}
EPS = 1e-5


# ----- a numpy reference of the paper's composite functions (eval mode) -----

def ref_bn(x, params, stats):
  params, stats = jax.tree.map(np.asarray, (params, stats))
  return (x - stats["mean"]) / np.sqrt(stats["var"] + EPS) * params["scale"] + params["bias"]


def ref_conv(x, kernel):
  """Stride-1 conv with k//2 zero padding, as a sum of shifted matrix products (numpy, float64)."""
  kernel = np.asarray(kernel, np.float64)
  k = kernel.shape[0]
  n, h, w, _ = x.shape
  padded = np.pad(np.asarray(x, np.float64), ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  return sum(padded[:, i:i + h, j:j + w] @ kernel[i, j] for i in range(k) for j in range(k))


def relu(x):
  return np.maximum(x, 0)


def ref_dense_layer(x, p, s, bottleneck):
  """H_l = BN-ReLU-Conv(1x1, 4k) - BN-ReLU-Conv(3x3, k) (bottleneck) or BN-ReLU-Conv(3x3, k)."""
  y = ref_conv(relu(ref_bn(x, p["norm1"], s["norm1"])), p["conv1"]["kernel"])
  if bottleneck:
    y = ref_conv(relu(ref_bn(y, p["norm2"], s["norm2"])), p["conv2"]["kernel"])
  return y


def ref_transition(x, p, s):
  y = ref_conv(relu(ref_bn(x, p["norm"], s["norm"])), p["conv"]["kernel"])
  n, h, w, c = y.shape
  return y.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_matches_published(name):
  num_classes, expected = PUBLISHED_PARAMS[name]
  info = registry.info(name)
  assert info.input_size == (32 if num_classes == 10 else 224)
  model = registry.create(name, num_classes)
  hash(model)  # hashable, so a training loop may pass it to jit as a static argument
  variables = abstract_variables(model, info.input_size)
  assert "batch_stats" in variables
  assert count_params(variables["params"]) == expected


@pytest.mark.parametrize("bottleneck", [True, False])
def test_dense_layer_is_pre_activation(bottleneck):
  layer = DenseLayer(growth_rate=4, bottleneck=bottleneck)
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 6))
  variables = host_variables(layer, x, random_bn=True)
  p, s = variables["params"], variables["batch_stats"]
  out = np.asarray(jax.jit(lambda v: layer.apply(v, x, train=False))(variables))
  assert out.shape == (2, 5, 5, 4)  # only the k new maps; the caller concatenates
  x = np.asarray(x)
  np.testing.assert_allclose(out, ref_dense_layer(x, p, s, bottleneck), rtol=1e-4, atol=1e-4)
  # A post-activation layer (Conv-BN-ReLU) would end in a ReLU; this one ends in a conv.
  assert out.min() < 0
  if bottleneck:
    assert set(p) == {"norm1", "conv1", "norm2", "conv2"}
    assert p["conv1"]["kernel"].shape == (1, 1, 6, 16) and p["conv2"]["kernel"].shape == (3, 3, 16, 4)
  else:
    assert set(p) == {"norm1", "conv1"} and p["conv1"]["kernel"].shape == (3, 3, 6, 4)
  assert all("bias" not in p[name] for name in p if name.startswith("conv"))


def test_transition_is_bn_relu_conv_then_avg_pool():
  transition = Transition(features=3)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 7))
  variables = host_variables(transition, x, random_bn=True)
  out = np.asarray(jax.jit(lambda v: transition.apply(v, x, train=False))(variables))
  assert out.shape == (2, 3, 3, 3)
  expected = ref_transition(np.asarray(x), variables["params"], variables["batch_stats"])
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bottleneck,compression", [(True, 0.5), (False, 1.0)])
def test_dense_connectivity_transitions_and_head(bottleneck, compression):
  # A tiny CIFAR DenseNet rebuilt in numpy from its own captured pieces: every layer sees the concatenation of
  # the stem and all earlier layers of its block, transitions compress, and the head is BN-ReLU-pool-dense.
  model = DenseNet(block_sizes=(2, 2), growth_rate=4, num_init_features=6, bottleneck=bottleneck,
                   compression=compression, stem="cifar", num_classes=5)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  variables = host_variables(model, x, random_bn=True)
  p, s = variables["params"], variables["batch_stats"]
  logits, state = jax.jit(lambda v: model.apply(v, x, train=False, capture_intermediates=True,
                                                mutable=["intermediates"]))(variables)
  inter = state["intermediates"]

  features = ref_conv(np.asarray(x), p["conv0"]["kernel"])  # CIFAR stem: one 3x3 conv, nothing after it
  for block in (1, 2):
    for layer in (1, 2):
      name = f"denseblock{block}_denselayer{layer}"
      new = ref_dense_layer(features, p[name], s[name], bottleneck)
      np.testing.assert_allclose(inter[name]["__call__"][0], new, rtol=1e-4, atol=1e-4)
      features = np.concatenate([features, new], axis=-1)
    if block == 1:
      assert features.shape[-1] == 6 + 2 * 4
      features = ref_transition(features, p["transition1"], s["transition1"])
      assert features.shape == (2, 4, 4, int(14 * compression))
      np.testing.assert_allclose(inter["transition1"]["__call__"][0], features, rtol=1e-4, atol=1e-4)
  assert "norm5" in p
  pooled = relu(ref_bn(features, p["norm5"], s["norm5"])).mean(axis=(1, 2))
  expected = pooled @ np.asarray(p["classifier"]["kernel"]) + np.asarray(p["classifier"]["bias"])
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,k,stem,transitions,final", [
    ("densenet121", 32, 64, [128, 256, 512], 1024),
    ("densenet161", 48, 96, [192, 384, 1056], 2208),
])
def test_imagenet_stage_shapes_at_224(name, k, stem, transitions, final):
  tree = abstract_intermediates(registry.create(name, 1000), 224)
  assert out_shape(tree, "stem") == (1, 112, 112, stem)
  assert out_shape(tree, "denseblock1_denselayer1") == (1, 56, 56, k)
  for i, (channels, size) in enumerate(zip(transitions, [28, 14, 7], strict=True), start=1):
    assert out_shape(tree, f"transition{i}") == (1, size, size, channels)
  assert out_shape(tree, "norm5") == (1, 7, 7, final)
  assert out_shape(tree) == (1, 1000)


@pytest.mark.parametrize("name,layers,transitions,final", [
    ("densenet_bc_100", 16, [108, 150], 342),  # 24+16*12=216 -> 108; 108+192=300 -> 150; 150+192
    ("densenet40", 12, [160, 304], 448),  # 16+12*12=160 -> 160; 160+144=304 -> 304; 304+144
])
def test_cifar_stage_shapes(name, layers, transitions, final):
  tree = abstract_intermediates(registry.create(name, 10), 32)
  assert f"denseblock3_denselayer{layers}" in tree and f"denseblock3_denselayer{layers + 1}" not in tree
  assert out_shape(tree, "transition1") == (1, 16, 16, transitions[0])
  assert out_shape(tree, "transition2") == (1, 8, 8, transitions[1])
  assert "transition3" not in tree
  assert out_shape(tree, "norm5") == (1, 8, 8, final)


def test_se_ratio_gates_each_dense_layer():
  base = dict(block_sizes=(2, 3), growth_rate=8, num_init_features=8, stem="cifar", num_classes=10)
  plain = abstract_variables(DenseNet(**base), 16)["params"]
  se = abstract_variables(DenseNet(**base, se_ratio=4), 16)["params"]
  layers = [name for name in se if "denselayer" in name]
  assert len(layers) == 5
  for name in layers:
    assert se[name]["se"]["reduce"]["kernel"].shape == (8, 2)
    assert se[name]["se"]["expand"]["kernel"].shape == (2, 8)
  assert count_params(se) - count_params(plain) == 5 * (8 * 2 + 2 + 2 * 8 + 8)


@pytest.mark.parametrize("name", ["densenet121", "densenet40"])
@pytest.mark.parametrize("train", [False, True])
def test_batch_norm_settings(name, train):
  # Every BatchNorm: Flax momentum 0.9 (PyTorch 0.1), torchvision's epsilon 1e-5, batch statistics only in training.
  seen = batch_norm_settings(registry.create(name, 10), 32, train)
  # stem + two per bottleneck layer + transitions + norm5 / one per basic layer + transitions + norm5
  assert len(seen) == {"densenet121": 1 + 2 * 58 + 3 + 1, "densenet40": 36 + 2 + 1}[name]
  assert set(seen) == {(0.9, 1e-5, not train)}


def test_dropout_only_in_training():
  layer = DenseLayer(growth_rate=4, drop_rate=0.5)
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
  variables = host_variables(layer, x, random_bn=True)
  evaluate = jax.jit(lambda module, v: module.apply(v, x, train=False), static_argnums=0)
  np.testing.assert_array_equal(evaluate(layer, variables), evaluate(DenseLayer(growth_rate=4), variables))
  train = jax.jit(lambda v, key: layer.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])[0])
  dropped = train(variables, jax.random.key(1, impl="rbg"))
  assert 0.2 < np.mean(np.asarray(dropped) == 0) < 0.8


def test_densenet40_forward_backward_small():
  # The registered densenet40 with k=4 and 4 layers per block (the compile of all 36 layers takes ~10 s on a
  # 2-core CPU), at 16 px.
  model = registry.create("densenet40", 10, growth_rate=4, block_sizes=(4, 4, 4))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  labels = jnp.array([2, 9])
  variables = host_variables(model, x, random_bn=True)
  (loss, updates), grads = cross_entropy_step(model, variables, x, labels)
  assert np.isfinite(loss) and loss > 0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.any(grads["conv0"]["kernel"] != 0)
  assert not np.allclose(updates["batch_stats"]["norm5"]["mean"], variables["batch_stats"]["norm5"]["mean"])
