"""Weight import (cnn_flax.convert) from torchvision state dicts and Keras application weights.

Three layers of evidence:
* torch-free (CI): the state-dict layout the converter expects equals torchvision 0.29's for every supported name
  (a digest of all keys and shapes, recorded from torchvision), conversions round-trip, the (C, H, W) -> (H, W, C)
  row permutation is numerically right, and bad inputs give one-line UserErrors naming the key.
* Keras (CI, Keras ships with tensorflow-cpu): random-weight, random-BN-statistics Keras applications give the
  same logits as the converted Flax models.
* torchvision (only where torch is installed; skipped otherwise): the same logit comparison against torchvision.
  tests/test_convert_fixtures.py compares with torchvision logits recorded in the repository, torch or not.
"""
import functools
import hashlib
import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

from cnn_flax import convert, convert_layout, models
from cnn_flax.errors import UserError
from cnn_flax.models.layers import adaptive_avg_pool

# sha256 (first 16 hex digits) of the sorted "key:shape" lines of torchvision 0.29.1's state_dict() for each model
# (num_batches_tracked excluded; googlenet with aux_logits=True), recorded with
# test_expected_layout_equals_torchvision below.
TORCHVISION_DIGESTS = {
    "alexnet": "5f2ba2adf40d1e24", "vgg11": "ee77761cc206f3b3", "vgg13": "ac6cfaab7e089aa2",
    "vgg16": "2933f95db4e21969", "vgg19": "89d4c13372499393", "vgg11_bn": "b7cf90c1fcdbc87e",
    "vgg13_bn": "3e5fe7b6cd60f14f", "vgg16_bn": "28ef834b3824b42b", "vgg19_bn": "006ad6ac3b8ed14b",
    "googlenet_bn": "d7ab168dae3ac074", "resnet18": "6df8c23754daca23", "resnet34": "61d060353ff37b27",
    "resnet50": "b3d2db7b9e7302e2", "resnet101": "eeefd907616c4da3", "resnet152": "bac21e27456e26a4",
    "densenet121": "16f40863620af868", "densenet161": "38db55316ec629bd", "densenet169": "e87026a215c44e2f",
    "densenet201": "77fb95d68e4c4911",
}


def _digest(shapes) -> str:
  text = "\n".join(f"{k}:{','.join(map(str, s))}" for k, s in sorted(shapes.items()))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _assert_logits_close(out, ref):
  # Float32 through tens of layers: compare relative to the logit scale, not element-wise.
  np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def _apply_fn(model):
  return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


@functools.lru_cache(maxsize=None)  # read-only by every test; generating AlexNet's 61M values takes seconds
def _random_variables(name: str, seed: int = 0) -> dict:
  """Random numpy variables with the model's tree (aux heads included), positive running variances."""
  abstract = convert_layout.abstract_variables(models.create(name, num_classes=1000), train=True)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if path[-1].key == "var":
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.standard_normal(leaf.shape, dtype=np.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract)


# ------------------------------------------------------------------------------------- torchvision, torch-free
@pytest.mark.parametrize("name", convert.TORCHVISION_NAMES)
def test_expected_layout_matches_recorded_torchvision_digest(name):
  assert _digest(convert.expected_torchvision_shapes(name)) == TORCHVISION_DIGESTS[name]


# The round trip of every torchvision mapping is tests/test_models.py's test_torchvision_mapping_round_trips.


def test_flatten_rows_are_permuted_from_chw_to_hwc():
  # fc6 of AlexNet: torchvision multiplies by the (C, H, W)-flattened map, Flax by the (H, W, C)-flattened one.
  variables = _random_variables("alexnet")
  torch_weight = convert.to_torchvision_layout("alexnet", variables)["classifier.1.weight"]  # (4096, 9216)
  feature_map = np.random.default_rng(1).standard_normal((6, 6, 256)).astype(np.float32)  # H, W, C
  torch_out = torch_weight @ feature_map.transpose(2, 0, 1).reshape(-1)
  flax_out = feature_map.reshape(-1) @ variables["params"]["fc6"]["kernel"]
  np.testing.assert_allclose(flax_out, torch_out, rtol=1e-4, atol=1e-3)


def test_googlenet_without_aux_heads_and_torchvision_quirks():
  variables = _random_variables("googlenet_bn")
  state_dict = {k: v for k, v in convert.to_torchvision_layout("googlenet_bn", variables).items()
                if not k.startswith("aux")}
  assert set(state_dict) == set(convert.expected_torchvision_shapes("googlenet_bn", aux_logits=False))
  state_dict["conv1.bn.num_batches_tracked"] = np.array(7)  # ignored
  converted = convert.from_torchvision("googlenet_bn", state_dict)
  assert "aux1" not in converted["params"] and "aux2" not in converted["batch_stats"]
  model = models.create("googlenet_bn", num_classes=1000, aux_logits=False)
  assert _apply_fn(model)(converted, np.zeros((1, 64, 64, 3), np.float32)).shape == (1, 1000)


def test_legacy_densenet_key_names_are_accepted():
  # torchvision's downloadable DenseNet files say "denselayer1.norm.1.weight" where the modules say "norm1".
  state_dict = convert.to_torchvision_layout("densenet121", _random_variables("densenet121"))
  legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state_dict.items()}
  assert legacy.keys() != state_dict.keys()
  convert.from_torchvision("densenet121", legacy)


def test_torchvision_errors_name_the_key():
  state_dict = convert.to_torchvision_layout("resnet18", _random_variables("resnet18"))
  missing = {k: v for k, v in state_dict.items() if k != "layer2.0.bn1.running_var"}
  with pytest.raises(UserError, match=r"lacks 'layer2\.0\.bn1\.running_var'"):
    convert.from_torchvision("resnet18", missing)
  wrong = {**state_dict, "fc.weight": np.zeros((10, 512), np.float32)}
  with pytest.raises(UserError, match=r"state_dict\['fc\.weight'\] has shape \(10, 512\).*expects \(1000, 512\)"):
    convert.from_torchvision("resnet18", wrong)
  assert convert.from_torchvision("resnet18", {**wrong, "fc.bias": np.zeros(10)}, num_classes=10)
  with pytest.raises(UserError, match=r"unexpected key\(s\), e\.g\. 'layer5\.0\.conv1\.weight'"):
    convert.from_torchvision("resnet18", {**state_dict, "layer5.0.conv1.weight": np.zeros(1)})
  with pytest.raises(UserError, match="googlenet_bn"):
    convert.from_torchvision("googlenet", state_dict)
  with pytest.raises(UserError, match="no torchvision weights for 'lenet5'"):
    convert.from_torchvision("lenet5", state_dict)


def test_load_state_dict_formats_and_errors(tmp_path, monkeypatch):
  arrays = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "fc.bias": np.ones(2, np.float32)}
  np.savez(tmp_path / "w.npz", **arrays)
  loaded = convert.load_state_dict(str(tmp_path / "w.npz"))
  assert loaded.keys() == arrays.keys() and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
  with pytest.raises(UserError, match="no weight file"):
    convert.load_state_dict(str(tmp_path / "absent.pth"))
  (tmp_path / "w.ckpt").write_bytes(b"")
  with pytest.raises(UserError, match="unsupported weight file"):
    convert.load_state_dict(str(tmp_path / "w.ckpt"))
  # The optional packages, made unimportable (a None entry in sys.modules raises ImportError).
  for package, suffix, hint in (("safetensors", ".safetensors", "pip install safetensors"),
                                ("torch", ".pth", "pip install torch")):
    (tmp_path / f"w{suffix}").write_bytes(b"")
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.setitem(sys.modules, f"{package}.numpy", None)
    with pytest.raises(UserError, match=hint):
      convert.load_state_dict(str(tmp_path / f"w{suffix}"))


def test_importing_convert_imports_neither_torch_nor_tensorflow():
  code = ("import sys, cnn_flax.convert\n"
          "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------- Keras
@pytest.fixture(scope="module")
def keras():
  """Keras on its numpy backend, imported once for the module.

  Why numpy: the TensorFlow backend costs seconds to import and leaves TensorFlow in sys.modules, which other tests
  of this suite forbid; the JAX backend compiles its initialisers once per weight shape (about 10 s per model).
  The numpy backend initialises with numpy and runs convolutions and pooling through jax.lax: what is under test
  is Keras's layer graph (padding layers, strides, BN formula, epsilon, flatten order), not a conv kernel. The
  backend is read at Keras's first import; an already imported Keras is used as it is.
  """
  if "keras" not in sys.modules:
    saved = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "numpy"
    try:
      module = pytest.importorskip("keras")
    finally:  # subprocesses of later tests must not inherit the choice
      if saved is None:
        os.environ.pop("KERAS_BACKEND")
      else:
        os.environ["KERAS_BACKEND"] = saved
  else:
    module = sys.modules["keras"]
  return module


def _randomize_keras(keras, model, rng, var_range=(0.5, 1.5)):
  """Keeps Keras's kernel initialisation (glorot: sane activations) and randomises biases and every BN array."""
  for layer in model.layers:
    w = layer.get_weights()
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.set_weights([rng.uniform(0.5, 1.5, w[0].shape), rng.normal(0, 0.1, w[1].shape),
                         rng.normal(0, 0.1, w[2].shape), rng.uniform(*var_range, w[3].shape)])
    elif len(w) == 2:
      layer.set_weights([w[0], rng.normal(0, 0.1, w[1].shape)])


@pytest.mark.parametrize("application, size, kwargs", [
    ("ResNet50", 64, {}),
    ("DenseNet121", 64, {}),
    ("MobileNet", 128, {"alpha": 0.25}),
])
def test_keras_logits_match(keras, application, size, kwargs):
  rng = np.random.default_rng(0)
  keras_model = getattr(keras.applications, application)(weights=None, input_shape=(size, size, 3),
                                                         classifier_activation=None, **kwargs)
  _randomize_keras(keras, keras_model, rng)
  x = rng.standard_normal((2, size, size, 3)).astype(np.float32)
  ref = keras_model.predict(x, verbose=0)
  model, variables = convert.from_keras(application, keras_model)
  _assert_logits_close(_apply_fn(model)(variables, x), ref)


def test_keras_mobilenet_epsilon_is_folded_into_the_variance(keras):
  # Keras's MobileNet BN epsilon is 1e-3, the Flax model's 1e-5. With running variances of 0.02-0.1 the
  # difference shifts the logits by about 5% of their scale, so a conversion that ignored it would fail.
  # (Much smaller variances make the random network chaotic: float rounding alone then grows layer by layer.)
  rng = np.random.default_rng(2)
  keras_model = keras.applications.MobileNet(weights=None, input_shape=(64, 64, 3), alpha=0.25,
                                             classifier_activation=None)
  _randomize_keras(keras, keras_model, rng, var_range=(0.02, 0.1))
  x = rng.standard_normal((2, 64, 64, 3)).astype(np.float32)
  ref = keras_model.predict(x, verbose=0)
  model, variables = convert.from_keras("mobilenet", keras_model)
  _assert_logits_close(_apply_fn(model)(variables, x), ref)
  unfolded = {**variables, "batch_stats": jax.tree_util.tree_map(lambda v: v - (1e-3 - 1e-5),
                                                                 variables["batch_stats"])}
  assert np.abs(np.asarray(_apply_fn(model)(unfolded, x)) - ref).max() > 1e-2 * np.abs(ref).max()


def test_keras_vgg16_features_and_head(keras):
  # Keras's VGG head needs 224 px (a Flatten of 7x7x512 into 4096 units). Convolutions here run at 64 px; the head
  # is a small stand-in built from Keras layers, fed the 7x7 map the Flax model's adaptive pool makes of 2x2.
  rng = np.random.default_rng(1)
  base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
  head = keras.Sequential([keras.Input((7, 7, 512)), keras.layers.Flatten(),
                           keras.layers.Dense(32, activation="relu", name="fc1"),
                           keras.layers.Dense(32, activation="relu", name="fc2"),
                           keras.layers.Dense(10, name="predictions")])
  _randomize_keras(keras, base, rng)
  _randomize_keras(keras, head, rng)
  x = rng.standard_normal((2, 64, 64, 3)).astype(np.float32)
  features = base.predict(x, verbose=0)  # (2, 2, 2, 512)
  ref = head.predict(np.asarray(adaptive_avg_pool(features, 7)), verbose=0)
  weights = {layer.name: layer.get_weights() for layer in base.layers + head.layers if layer.get_weights()}
  model, variables = convert.from_keras("VGG16", weights)
  assert (model.num_classes, model.classifier_width) == (10, 32)
  _assert_logits_close(_apply_fn(model)(variables, x), ref)


def test_keras_errors(keras):
  headless = keras.applications.MobileNet(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.25)
  with pytest.raises(UserError, match="include_top=True"):
    convert.from_keras("MobileNet", headless)
  weights = {layer.name: layer.get_weights() for layer in headless.layers if layer.get_weights()}
  weights["conv_preds"] = [np.zeros((1, 1, 256, 5), np.float32), np.zeros(5, np.float32)]
  convert.from_keras("MobileNet", weights)  # complete: converts
  bad = {**weights, "conv_pw_3": [np.zeros((1, 1, 32, 33), np.float32)]}
  with pytest.raises(UserError, match="'conv_pw_3' has a kernel of shape"):
    convert.from_keras("MobileNet", bad)
  with pytest.raises(UserError, match="lack the layer 'conv_dw_7'"):
    convert.from_keras("MobileNet", {k: v for k, v in weights.items() if k != "conv_dw_7"})
  with pytest.raises(UserError, match="no place for, e.g. 'extra_dense'"):
    convert.from_keras("MobileNet", {**weights, "extra_dense": [np.zeros((2, 2))]})
  with pytest.raises(UserError, match="no Keras conversion for 'EfficientNetB0'"):
    convert.from_keras("EfficientNetB0", weights)
  with pytest.raises(UserError, match="keras Model or a dict"):
    convert.from_keras("MobileNet", list(weights.values()))


# ------------------------------------------------------------------------------ torchvision (needs torch)
def _torchvision_model(torch, torchvision, tv_name, seed=0, **kwargs):
  """A torchvision model with its default random init and random BN affine parameters and statistics."""
  torch.manual_seed(seed)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # GoogLeNet's warning about its future default initialisation
    model = getattr(torchvision.models, tv_name)(weights=None, **kwargs)
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5, generator=generator)
        module.bias.normal_(0, 0.1, generator=generator)
        module.running_mean.normal_(0, 0.1, generator=generator)
        module.running_var.uniform_(0.5, 1.5, generator=generator)
  return model.eval()


@pytest.mark.parametrize("tv_name, name, kwargs", [
    ("alexnet", "alexnet", {}),
    ("vgg11_bn", "vgg11_bn", {}),
    ("googlenet", "googlenet_bn", {"aux_logits": False}),
    ("googlenet", "googlenet_bn", {"aux_logits": True}),
    ("googlenet", "googlenet_bn", {"aux_logits": False, "transform_input": True}),
    ("resnet18", "resnet18", {}),
    ("resnet50", "resnet50", {}),
    ("densenet121", "densenet121", {}),
])
def test_torchvision_logits_match(tv_name, name, kwargs):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  tv_model = _torchvision_model(torch, torchvision, tv_name, **kwargs)
  x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
  with torch.no_grad():
    ref = tv_model(torch.from_numpy(x)).numpy()
  variables = convert.from_torchvision(name, tv_model.state_dict())  # torch tensors are accepted as they are
  x_nhwc = x.transpose(0, 2, 3, 1)
  if kwargs.get("transform_input"):
    x_nhwc = convert.torchvision_googlenet_input(x_nhwc)
  _assert_logits_close(_apply_fn(models.create(name, num_classes=1000))(variables, x_nhwc), ref)


def test_torchvision_googlenet_aux_heads_match_in_training_mode():
  # Aux heads only run in training: compare there, with dropout off and BN on batch statistics in both.
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  tv_model = _torchvision_model(torch, torchvision, "googlenet", aux_logits=True, dropout=0.0,
                                dropout_aux=0.0).train()
  x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
  with torch.no_grad():
    ref = tv_model(torch.from_numpy(x))
  model = models.create("googlenet_bn", num_classes=1000, dropout_rate=0.0, aux_dropout_rate=0.0)
  variables = convert.from_torchvision("googlenet_bn", tv_model.state_dict())
  train_apply = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0])
  out = train_apply(variables, x.transpose(0, 2, 3, 1))
  _assert_logits_close(out["logits"], ref.logits.numpy())
  _assert_logits_close(out["aux_logits"][0], ref.aux_logits1.numpy())
  _assert_logits_close(out["aux_logits"][1], ref.aux_logits2.numpy())


@pytest.mark.parametrize("name", convert.TORCHVISION_NAMES)
def test_expected_layout_equals_torchvision(name):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  tv_name = "googlenet" if name == "googlenet_bn" else name
  kwargs = {"aux_logits": True, "init_weights": False} if tv_name == "googlenet" else {}
  with torch.device("meta"):  # shapes only: no memory, no initialisation
    tv_model = getattr(torchvision.models, tv_name)(weights=None, **kwargs)
  shapes = {k: tuple(v.shape) for k, v in tv_model.state_dict().items() if not k.endswith("num_batches_tracked")}
  assert convert.expected_torchvision_shapes(name) == shapes
  assert _digest(shapes) == TORCHVISION_DIGESTS[name]


def test_load_state_dict_reads_torch_files(tmp_path):
  torch = pytest.importorskip("torch")
  state = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.ones(2, dtype=torch.bfloat16)}
  torch.save({"state_dict": state}, tmp_path / "w.pth")
  loaded = convert.load_state_dict(str(tmp_path / "w.pth"))
  assert loaded["fc.weight"].dtype == np.float32 and loaded["fc.bias"].dtype == np.float32
  np.testing.assert_array_equal(loaded["fc.weight"], np.arange(6.0).reshape(2, 3))
