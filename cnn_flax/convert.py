"""Weight import: torchvision state dicts and Keras application weights -> Flax variables for ``models.create``.

Why it is built this way: the models name their modules after torchvision's (see each family's docstring), so a
conversion is a table from a Flax module path to a source layer name plus a few layout rules, not a per-family
copy of the network. The Flax side is the authority: the expected parameter tree comes from ``jax.eval_shape``
of the registered model (no compute, no memory), every Flax leaf module must find its source layer, every source
key must be used, and every array must have the shape the model expects -- otherwise a one-line ``UserError``
names the offending key. The same table run backwards (``to_torchvision_layout``) produces torchvision-layout
state dicts, which lets the tests check the mapping without torch.

Layout rules: conv kernels OIHW -> HWIO (grouped convs keep torchvision's per-group input axis, which is also
Flax's), dense (out, in) -> (in, out), and the first dense layer after a flatten (AlexNet/VGG fc6, GoogLeNet's
aux fc1) has its rows permuted, because torchvision flattens (C, H, W) and the Flax models flatten (H, W, C).
Keras kernels are already HWIO; depthwise kernels (H, W, C, 1) become Flax's (H, W, 1, C).

Two Keras differences are folded into the weights instead of changing the models, exactly at inference:
* Keras's ResNets give every conv a bias although a BatchNorm follows; BN(conv(x) + b) with running mean m equals
  BN(conv(x)) with running mean m - b (and in training the batch mean absorbs b anyway).
* Keras's BatchNorm epsilon (1.001e-5 in ResNet/DenseNet, 1e-3 in MobileNet) differs from the models' default
  ``bn_epsilon`` field (1e-5); var + eps is all BN uses at inference, so Keras's epsilon minus the created model's
  ``bn_epsilon`` is added to the running variances. The model keeps its own epsilon, so training from these
  variables normalises batches with 1e-5 instead of Keras's epsilon.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax import models
from cnn_flax.errors import UserError

TORCHVISION_NAMES = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
                     "googlenet_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                     "densenet121", "densenet161", "densenet169", "densenet201")
# Keras application name (lower case) -> cnn_flax model name.
KERAS_NAMES = {"vgg16": "vgg16", "vgg19": "vgg19", "resnet50": "resnet50", "resnet101": "resnet101",
               "resnet152": "resnet152", "densenet121": "densenet121", "densenet169": "densenet169",
               "densenet201": "densenet201", "mobilenet": "mobilenet_v1", "mobilenet_v1": "mobilenet_v1"}

Path = tuple[str, ...]
# A rule: (regex over the Flax module path joined by '/', source layer name template or function of the match,
# layout note). Notes: ("chw", C, H, W) = rows flattened (C, H, W) at the source; "depthwise"; "squeeze" (a 1x1 conv
# used as a dense layer).
Rule = tuple[str, Any, Any]

_TV_GOOGLENET = [
    (r"conv1/unit/(conv|bn)", r"conv1.\1", None),
    (r"conv2_reduce/unit/(conv|bn)", r"conv2.\1", None),  # torchvision counts the 1x1 reduce as conv2 ...
    (r"conv2/unit/(conv|bn)", r"conv3.\1", None),  # ... and the 3x3 as conv3
    (r"(inception\w+)/branch1/unit/(conv|bn)", r"\1.branch1.\2", None),
    (r"(inception\w+)/branch([23])_reduce/unit/(conv|bn)", r"\1.branch\2.0.\3", None),
    (r"(inception\w+)/branch([23])/unit/(conv|bn)", r"\1.branch\2.1.\3", None),
    (r"(inception\w+)/branch4_proj/unit/(conv|bn)", r"\1.branch4.1.\2", None),  # branch4.0 is the max-pool
    (r"(aux[12])/conv/unit/(conv|bn)", r"\1.conv.\2", None),
    (r"(aux[12])/fc1", r"\1.fc1", ("chw", 128, 4, 4)),
    (r"(aux[12])/fc2", r"\1.fc2", None),
    (r"fc", "fc", None),
]
_TV_RESNET = [
    (r"stem/conv", "conv1", None), (r"stem/bn", "bn1", None),
    (r"(layer\d)_(\d+)/conv_bn(\d)/conv", r"\1.\2.conv\3", None),
    (r"(layer\d)_(\d+)/conv_bn(\d)/bn", r"\1.\2.bn\3", None),
    (r"(layer\d)_(\d+)/downsample/conv", r"\1.\2.downsample.0", None),
    (r"(layer\d)_(\d+)/downsample/bn", r"\1.\2.downsample.1", None),
    (r"fc", "fc", None),
]
_TV_DENSENET = [
    (r"stem/conv", "features.conv0", None), (r"stem/bn", "features.norm0", None),
    (r"(denseblock\d)_(denselayer\d+)/(norm|conv)(\d)", r"features.\1.\2.\3\4", None),
    (r"(transition\d)/(norm|conv)", r"features.\1.\2", None),
    (r"norm5", "features.norm5", None), (r"classifier", "classifier", None),
]
_TV_ALEXNET = [(f"conv{i}", f"features.{j}", None) for i, j in zip(range(1, 6), (0, 3, 6, 8, 10), strict=True)] + [
    ("fc6", "classifier.1", ("chw", 256, 6, 6)), ("fc7", "classifier.4", None), ("fc8", "classifier.6", None)]

_KERAS_RESNET = [
    (r"stem/(conv|bn)", r"conv1_\1", None),
    (r"layer(\d)_(\d+)/conv_bn(\d)/(conv|bn)", lambda m: f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_{m[3]}_{m[4]}",
     None),
    (r"layer(\d)_(\d+)/downsample/(conv|bn)", lambda m: f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_0_{m[3]}", None),
    (r"fc", "predictions", None),
]
_DENSE_SUFFIX = {"norm1": "0_bn", "conv1": "1_conv", "norm2": "1_bn", "conv2": "2_conv"}
_KERAS_DENSENET = [
    (r"stem/(conv|bn)", r"conv1_\1", None),
    (r"denseblock(\d)_denselayer(\d+)/(\w+)", lambda m: f"conv{int(m[1]) + 1}_block{m[2]}_{_DENSE_SUFFIX[m[3]]}", None),
    (r"transition(\d)/(conv|norm)", lambda m: f"pool{int(m[1]) + 1}_{'bn' if m[2] == 'norm' else 'conv'}", None),
    (r"norm5", "bn", None), (r"classifier", "predictions", None),
]
_KERAS_MOBILENET = [
    (r"conv1/conv", "conv1", None), (r"conv1/bn", "conv1_bn", None),
    (r"block(\d+)/depthwise/conv", r"conv_dw_\1", "depthwise"), (r"block(\d+)/depthwise/bn", r"conv_dw_\1_bn", None),
    (r"block(\d+)/pointwise/conv", r"conv_pw_\1", None), (r"block(\d+)/pointwise/bn", r"conv_pw_\1_bn", None),
    (r"fc", "conv_preds", "squeeze"),  # Keras's classifier is a 1x1 conv on the pooled 1x1 map
]
_KERAS_VGG = [(r"conv(\d)_(\d)", r"block\1_conv\2", None), ("fc6", "fc1", None), ("fc7", "fc2", None),
              ("fc8", "predictions", None)]
# Keras's BatchNorm epsilon, used when only arrays are given (a Keras Model reports each layer's own).
_KERAS_EPSILON = {"resnet": 1.001e-5, "densenet": 1.001e-5, "mobilenet": 1e-3}


def _family(name: str) -> str:
  return re.match(r"[a-z]+", name)[0]


# ----------------------------------------------------------------------------------------------- the Flax side
def _abstract_variables(model, train: bool) -> dict:
  """Shapes of ``model.init``'s variables, without computing anything (224 px; no model depends on it)."""
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  init = functools.partial(model.init, train=train)
  return jax.eval_shape(init, {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)


def _leaf_modules(variables: Mapping) -> list[tuple[Path, Mapping, Mapping | None]]:
  """(path, params, batch_stats or None) of every module that owns arrays, in tree order."""
  out = []

  def walk(node, path):
    own = {k: v for k, v in node.items() if not isinstance(v, Mapping)}
    if own:
      stats = variables.get("batch_stats", {})
      for p in path:
        stats = stats.get(p, {}) if isinstance(stats, Mapping) else {}
      out.append((path, own, stats or None))
    for k, v in node.items():
      if isinstance(v, Mapping):
        walk(v, path + (k,))

  walk(variables["params"], ())
  return out


def _kind(params: Mapping, stats: Mapping | None) -> str:
  if stats is not None and "mean" in stats:
    return "bn"
  return "conv" if len(params["kernel"].shape) == 4 else "dense"


def _vgg_rules(leaves) -> list[Rule]:
  """torchvision's ``features`` is one Sequential: conv(, bn), relu per conv, a max-pool after each stage."""
  rules, index, stage = [], 0, None
  convs = sorted((tuple(map(int, p[0][4:].split("_"))) for p, _, _ in leaves if p[0].startswith("conv")))
  has_bn = any(p[0].startswith("bn") for p, _, _ in leaves)
  for s, i in convs:
    if stage is not None and s != stage:
      index += 1  # the previous stage's max-pool
    stage = s
    rules.append((f"conv{s}_{i}", f"features.{index}", None))
    if has_bn:
      rules.append((f"bn{s}_{i}", f"features.{index + 1}", None))
    index += 3 if has_bn else 2
  return rules + [("fc6", "classifier.0", ("chw", 512, 7, 7)), ("fc7", "classifier.3", None),
                  ("fc8", "classifier.6", None)]


def _torchvision_rules(name: str, leaves) -> list[Rule]:
  family = _family(name)
  if family == "vgg":
    return _vgg_rules(leaves)
  return {"alexnet": _TV_ALEXNET, "googlenet": _TV_GOOGLENET, "resnet": _TV_RESNET, "densenet": _TV_DENSENET}[family]


def _match(rules: Sequence[Rule], path: Path, where: str) -> tuple[str, Any]:
  joined = "/".join(path)
  for pattern, template, note in rules:
    m = re.fullmatch(pattern, joined)
    if m:
      return (template(m) if callable(template) else m.expand(template)), note
  # Only reachable if a model file renames a module: a bug here, not the user's.
  raise ValueError(f"no {where} name for the Flax module {joined!r}")


def _set(tree: dict, path: Path, leaf: str, value) -> None:
  for p in path:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def _to_numpy(value) -> np.ndarray:
  """A numpy array from numpy, jax or torch tensors (without importing torch)."""
  if hasattr(value, "detach"):  # torch.Tensor: bf16/fp16 have no numpy equivalent worth keeping
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    value = value.numpy()
  return np.asarray(value)


# ------------------------------------------------------------------------------------------------ torchvision
def _check_torchvision_name(name: str) -> None:
  if name == "googlenet":
    raise UserError("torchvision's googlenet (BatchNorm, 3x3 'five-by-five' branch) is cnn_flax's 'googlenet_bn'")
  if name not in TORCHVISION_NAMES:
    raise UserError(f"no torchvision weights for {name!r}; supported: {', '.join(TORCHVISION_NAMES)}")


def _torchvision_plan(name: str, leaves) -> list[tuple[Path, str, str, Any, Mapping, Mapping | None]]:
  """(flax path, torchvision prefix, kind, layout note, flax params, flax batch_stats) for every leaf module."""
  rules = _torchvision_rules(name, leaves)
  plan = []
  for path, params, stats in leaves:
    prefix, note = _match(rules, path, "torchvision")
    plan.append((path, prefix, _kind(params, stats), note, params, stats))
  return plan


def _torch_shape(kind: str, suffix: str, flax_shape: Sequence[int]) -> tuple[int, ...]:
  """The torchvision shape of a Flax array (for checks and messages)."""
  if suffix == "weight" and kind == "conv":
    h, w, i, o = flax_shape
    return (o, i, h, w)
  if suffix == "weight" and kind == "dense":
    return tuple(reversed(flax_shape))
  return tuple(flax_shape)


def _normalise_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for key, value in state_dict.items():
    if key.endswith("num_batches_tracked"):
      continue  # a training counter, no Flax equivalent
    # torchvision's published DenseNet files predate its module names ("denselayer1.norm.1" for "norm1"); its
    # loader renames them, and so does this one.
    key = re.sub(r"(denselayer\d+\.)(norm|relu|conv)\.((?:[12])\.(?:weight|bias|running_mean|running_var))$",
                 r"\1\2\3", key)
    out[key] = _to_numpy(value)
  return out


def from_torchvision(name: str, state_dict: Mapping[str, Any], *, num_classes: int = 1000) -> dict:
  """Flax variables for ``models.create(name, num_classes=num_classes)`` from a torchvision ``state_dict``.

  ``state_dict`` maps torchvision's parameter names to numpy arrays (or CPU torch tensors); BatchNorm running
  statistics are required, ``num_batches_tracked`` is ignored. ``name`` is the cnn_flax name (torchvision's
  ``googlenet`` is ``googlenet_bn``); GoogLeNet state dicts may omit the aux heads (``aux_logits=False``), in
  which case create the model with ``aux_logits=False`` for training. Returns numpy arrays in the structure of
  ``model.init``: ``{"params": ..., "batch_stats": ...}`` (no ``batch_stats`` for models without BatchNorm).
  Raises ``UserError`` naming the key on an unknown, missing or wrongly shaped entry.
  """
  _check_torchvision_name(name)
  given = _normalise_state_dict(state_dict)
  model = models.create(name, num_classes=num_classes)
  leaves = _leaf_modules(_abstract_variables(model, train=True))
  if name == "googlenet_bn" and not any(k.startswith(("aux1.", "aux2.")) for k in given):
    leaves = [leaf for leaf in leaves if leaf[0][0] not in ("aux1", "aux2")]  # an aux_logits=False state dict

  variables: dict = {"params": {}}
  used = set()
  for path, prefix, kind, note, params, _ in _torchvision_plan(name, leaves):
    flax_leaves = {"scale": "weight", "bias": "bias"} if kind == "bn" else {"kernel": "weight", "bias": "bias"}
    items = [(f, s, params[f].shape) for f, s in flax_leaves.items() if f in params]
    if kind == "bn":
      items += [("mean", "running_mean", params["scale"].shape), ("var", "running_var", params["scale"].shape)]
    for flax_name, suffix, flax_shape in items:
      key = f"{prefix}.{suffix}"
      if key not in given:
        raise UserError(f"state_dict for {name} lacks {key!r} (needed for Flax {'/'.join(path + (flax_name,))})")
      value, expected = given[key], _torch_shape(kind, suffix, flax_shape)
      if value.shape != expected:
        raise UserError(f"state_dict[{key!r}] has shape {value.shape}, {name} (num_classes={num_classes}) "
                        f"expects {expected}")
      used.add(key)
      if suffix == "weight" and kind == "conv":
        value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      elif suffix == "weight" and kind == "dense":
        if note is not None:  # rows flattened (C, H, W) in torchvision, (H, W, C) in Flax
          _, c, h, w = note
          value = value.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
        else:
          value = value.T
      collection = "batch_stats" if flax_name in ("mean", "var") else "params"
      _set(variables.setdefault(collection, {}), path, flax_name, np.ascontiguousarray(value, np.float32))
  extra = sorted(set(given) - used)
  if extra:
    raise UserError(f"state_dict for {name} has {len(extra)} unexpected key(s), e.g. {extra[0]!r}")
  return variables


def _torchvision_arrays(name: str, variables: Mapping) -> dict[str, Any]:
  """``to_torchvision_layout`` with array methods only, so that ``jax.eval_shape`` can run it on shapes."""
  out = {}
  for _, prefix, kind, note, params, stats in _torchvision_plan(name, _leaf_modules(variables)):
    if kind == "bn":
      arrays = {"weight": params["scale"], "bias": params["bias"], "running_mean": stats["mean"],
                "running_var": stats["var"]}
    else:
      kernel = params["kernel"]
      if kind == "conv":
        weight = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
      elif note is not None:
        _, c, h, w = note
        weight = kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)
      else:
        weight = kernel.T
      arrays = {"weight": weight, **({"bias": params["bias"]} if "bias" in params else {})}
    out.update({f"{prefix}.{suffix}": value for suffix, value in arrays.items()})
  return out


def to_torchvision_layout(name: str, variables: Mapping) -> dict[str, np.ndarray]:
  """The inverse of ``from_torchvision``: a torchvision-named state dict of numpy arrays (without
  ``num_batches_tracked``), for exporting weights and for testing the mapping without torch.
  """
  _check_torchvision_name(name)
  return {k: np.ascontiguousarray(v) for k, v in _torchvision_arrays(name, variables).items()}


def expected_torchvision_shapes(name: str, *, num_classes: int = 1000, aux_logits: bool = True
                                ) -> dict[str, tuple[int, ...]]:
  """The state dict ``from_torchvision(name, ...)`` expects: torchvision key -> shape (computed, not stored)."""
  _check_torchvision_name(name)
  abstract = _abstract_variables(models.create(name, num_classes=num_classes), train=True)
  if not aux_logits:
    abstract = {c: {k: v for k, v in tree.items() if k not in ("aux1", "aux2")} for c, tree in abstract.items()}
  shapes = jax.eval_shape(functools.partial(_torchvision_arrays, name), abstract)
  return {k: tuple(v.shape) for k, v in shapes.items()}


def torchvision_googlenet_input(x):
  """torchvision's ``transform_input`` for GoogLeNet, on NHWC images.

  torchvision's pretrained GoogLeNet (``transform_input=True``) re-normalises its ImageNet-normalised input to
  (x - 0.5) / 0.5 per channel before conv1. The affine map cannot be folded into conv1's weights exactly (conv1's
  zero padding would become non-zero), so apply this to the inputs of a converted pretrained GoogLeNet.
  """
  mean = jnp.asarray([0.485, 0.456, 0.406], jnp.float32)
  std = jnp.asarray([0.229, 0.224, 0.225], jnp.float32)
  return x * (std / 0.5) + (mean - 0.5) / 0.5


# ------------------------------------------------------------------------------------------------------ files
def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a state dict from ``.safetensors`` (needs ``safetensors``), ``.npz`` or ``.pth``/``.pt`` (needs torch).

  Checkpoints that wrap the state dict (``{"state_dict": ...}`` or ``{"model": ...}``) are unwrapped.
  """
  if not os.path.isfile(path):
    raise UserError(f"no weight file at {path!r}")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npz":
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  if ext == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise UserError(f"reading {path} needs the safetensors package: pip install safetensors") from None
    return dict(load_file(path))
  if ext in (".pth", ".pt", ".bin"):
    try:
      import torch  # optional and heavy: imported only here
    except ImportError:
      raise UserError(f"reading {path} needs PyTorch: pip install torch (CPU wheels suffice), or save the "
                      "state dict as .npz / .safetensors where torch is installed") from None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
      if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
      raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k: _to_numpy(v) for k, v in obj.items()}
  raise UserError(f"unsupported weight file {path!r}: use .safetensors, .npz, .pth or .pt")


# ------------------------------------------------------------------------------------------------------ Keras
def _keras_arrays(weights) -> tuple[dict[str, list[np.ndarray]], dict[str, float]]:
  """(layer name -> arrays in ``get_weights()`` order, layer name -> BN epsilon where known)."""
  if hasattr(weights, "layers"):  # a keras Model
    arrays, eps = {}, {}
    for layer in weights.layers:
      w = layer.get_weights()
      if w:
        arrays[layer.name] = [np.asarray(a) for a in w]
      if hasattr(layer, "epsilon") and hasattr(layer, "moving_mean"):
        eps[layer.name] = float(layer.epsilon)
    return arrays, eps
  if isinstance(weights, Mapping):
    return {k: [_to_numpy(a) for a in v] for k, v in weights.items()}, {}
  raise UserError("Keras weights must be a keras Model or a dict {layer name: layer.get_weights()}, got "
                  f"{type(weights).__name__}")


def _keras_overrides(family: str, arrays: Mapping[str, list[np.ndarray]]) -> dict[str, Any]:
  """Model fields read off the weights: classes, VGG classifier width, MobileNet width multiplier."""
  head = {"vgg": "predictions", "mobilenet": "conv_preds"}.get(family, "predictions")
  if head not in arrays:
    raise UserError(f"Keras weights lack the classifier layer {head!r}: build the Keras model with include_top=True "
                    "(or add the head's arrays under that name)")
  overrides: dict[str, Any] = {"num_classes": int(arrays[head][0].shape[-1])}
  if family == "vgg" and "fc1" in arrays:
    overrides["classifier_width"] = int(arrays["fc1"][0].shape[-1])
  if family == "resnet":
    overrides["stride_on_3x3"] = False  # Keras's ResNets are v1: the stride sits on the first 1x1
  if family == "mobilenet":
    overrides["act"] = nn.relu6  # Keras (like TF-slim) uses ReLU6
    if "conv_pw_13" in arrays:
      overrides["width_multiplier"] = arrays["conv_pw_13"][0].shape[-1] / 1024
  return overrides


def from_keras(name: str, weights) -> tuple[Any, dict]:
  """``(model, variables)`` reproducing a ``keras.applications`` model.

  ``name``: a Keras application (VGG16, VGG19, ResNet50/101/152, DenseNet121/169/201, MobileNet; case-insensitive)
  or the cnn_flax name. ``weights``: the Keras Model itself (``include_top=True``), or a dict mapping layer names to
  ``layer.get_weights()`` lists (as stored in Keras's .h5 weight files). The model is created with the fields the
  Keras network needs (v1 ResNet stride placement, ReLU6 and width multiplier for MobileNet, class count and VGG
  classifier width read from the weights). Inputs must be preprocessed as Keras's ``preprocess_input`` does
  (caffe-style BGR for VGG/ResNet). MobileNet matches Keras when every stride-2 layer sees an even size (inputs a
  multiple of 32): Keras pads (0, 1) before its stride-2 depthwise convs whatever the size, Flax's 'SAME' only
  on even sizes.
  """
  flax_name = KERAS_NAMES.get(name.lower())
  if flax_name is None:
    raise UserError(f"no Keras conversion for {name!r}; supported: {', '.join(sorted(set(KERAS_NAMES)))}")
  family = _family(flax_name)
  arrays, keras_eps = _keras_arrays(weights)
  model = models.create(flax_name, **_keras_overrides(family, arrays))
  rules = {"vgg": _KERAS_VGG, "resnet": _KERAS_RESNET, "densenet": _KERAS_DENSENET,
           "mobilenet": _KERAS_MOBILENET}[family]
  leaves = _leaf_modules(_abstract_variables(model, train=False))

  variables: dict = {"params": {}}
  folded_bias: dict[Path, np.ndarray] = {}
  used = set()
  # Convs before BNs, so that a conv bias is known when its BatchNorm is converted.
  for path, params, stats in sorted(leaves, key=lambda leaf: _kind(leaf[1], leaf[2]) == "bn"):
    layer, note = _match(rules, path, "Keras")
    kind = _kind(params, stats)
    if layer not in arrays:
      raise UserError(f"Keras weights for {name} lack the layer {layer!r} (needed for Flax {'/'.join(path)})")
    used.add(layer)
    got = arrays[layer]
    if kind == "bn":
      if len(got) != 4:
        raise UserError(f"Keras layer {layer!r} has {len(got)} arrays; expected BatchNorm's gamma, beta, mean, var")
      gamma, beta, mean, var = (a.astype(np.float64) for a in got)
      mean = mean - folded_bias.pop(path[:-1], 0.0)
      var = var + keras_eps.get(layer, _KERAS_EPSILON[family]) - model.bn_epsilon
      new = {"scale": gamma, "bias": beta}
      stats_new = {"mean": mean, "var": var}
    else:
      kernel = got[0]
      source_ndim = 2 if kind == "dense" and note != "squeeze" else 4
      if kernel.ndim != source_ndim or (note == "squeeze" and kernel.shape[:2] != (1, 1)):
        raise UserError(f"Keras layer {layer!r} has a kernel of shape {kernel.shape}; the Flax model expects "
                        f"{params['kernel'].shape}{' as a 1x1 conv' if note == 'squeeze' else ''}")
      if note == "depthwise":
        kernel = kernel.transpose(0, 1, 3, 2)  # (H, W, C, 1) -> (H, W, 1, C)
      elif note == "squeeze":
        kernel = kernel.reshape(kernel.shape[-2], kernel.shape[-1])
      new, stats_new = {"kernel": kernel}, {}
      if len(got) > 1:
        if "bias" in params:
          new["bias"] = got[1]
        elif (path[-1] == "conv" and any(p[:-1] == path[:-1] and p[-1] == "bn" for p, _, _ in leaves)
              and got[1].shape == params["kernel"].shape[-1:]):
          folded_bias[path[:-1]] = got[1].astype(np.float64)  # a bias before a BN: moves into the BN's mean
        else:
          raise UserError(f"Keras layer {layer!r} has a bias the Flax module {'/'.join(path)} cannot hold")
    for collection, group, ref in (("params", new, params), ("batch_stats", stats_new, stats or {})):
      for leaf, value in group.items():
        if value.shape != ref[leaf].shape:
          raise UserError(f"Keras layer {layer!r} has a {leaf} of shape {value.shape}; the Flax model expects "
                          f"{ref[leaf].shape}")
        _set(variables.setdefault(collection, {}), path, leaf, np.ascontiguousarray(value, np.float32))
  extra = sorted(set(arrays) - used)
  if extra:
    raise UserError(f"Keras weights have {len(extra)} layer(s) the {flax_name} model has no place for, e.g. "
                    f"{extra[0]!r}")
  return model, variables

