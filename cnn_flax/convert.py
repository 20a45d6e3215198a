"""Weight import: torchvision state dicts and Keras application weights -> Flax variables for ``models.create``.

Why it is built this way: the models name their modules after torchvision's (see each family's docstring), so a
conversion is a table from a Flax module path to a source layer name plus a few layout rules, not a per-family
copy of the network. Each family keeps its tables next to its modules and registers them with the model
(``models.info(name).torchvision_rules`` and ``.keras``); this module is the engine that applies them. The Flax
side is the authority: the expected parameter tree comes from ``jax.eval_shape`` of the registered model (no
compute, no memory), every Flax leaf module must find its source layer, every source key must be used, and every
array must have the shape the model expects -- otherwise a one-line ``UserError`` names the offending key. The
same table run backwards (``to_torchvision_layout``) produces torchvision-layout state dicts, which lets the tests
check the mapping without torch.

Layout rules: conv kernels OIHW -> HWIO (grouped convs keep torchvision's per-group input axis, which is also
Flax's), dense (out, in) -> (in, out), and the first dense layer after a flatten (AlexNet/VGG fc6, GoogLeNet's
aux fc1) has its rows permuted, because torchvision flattens (C, H, W) and the Flax models flatten (H, W, C).
Keras kernels are already HWIO; depthwise kernels (H, W, C, 1) become Flax's (H, W, 1, C). The transforms and the
tree walk live in ``cnn_flax.convert_layout``; ``torch_conv_to_flax``, ``flax_conv_to_torch``,
``torch_dense_to_flax`` and ``flax_dense_to_torch`` are importable from here too.

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

import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax import convert_layout as layout
from cnn_flax import models
from cnn_flax.convert_layout import flax_conv_to_torch, flax_dense_to_torch, torch_conv_to_flax, torch_dense_to_flax
from cnn_flax.errors import UserError
from cnn_flax.models.registry import KerasMapping


def _natural_key(name: str) -> list:
  # resnet18 before resnet101, vgg11 before vgg11_bn before vgg13.
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _torchvision_names() -> tuple[str, ...]:
  return tuple(sorted((n for n in models.names() if models.info(n).torchvision_rules is not None), key=_natural_key))


def _keras_names() -> dict[str, str]:
  """Keras application name (lower case) -> registered model name, from the registrations."""
  table: dict[str, str] = {}
  for name in models.names():
    mapping = models.info(name).keras
    for application in mapping.applications if mapping is not None else ():
      if application in table:
        raise ValueError(f"Keras application {application!r} is registered by {table[application]!r} and {name!r}")
      table[application] = name
  return table


# Derived from the registry when this module is imported (every family registers on `import cnn_flax.models`).
TORCHVISION_NAMES = _torchvision_names()
KERAS_NAMES = _keras_names()


# ------------------------------------------------------------------------------------------------ torchvision
def _check_torchvision_name(name: str) -> None:
  if name == "googlenet":
    raise UserError("torchvision's googlenet (BatchNorm, 3x3 'five-by-five' branch) is cnn_flax's 'googlenet_bn'")
  if name not in models.names() or models.info(name).torchvision_rules is None:
    raise UserError(f"no torchvision weights for {name!r}; supported: {', '.join(_torchvision_names())}")


def _torchvision_plan(name: str, leaves) -> list[tuple[layout.Path, str, str, Any, Mapping, Mapping | None]]:
  """(flax path, torchvision prefix, kind, layout note, flax params, flax batch_stats) for every leaf module."""
  rules = models.info(name).torchvision_rules
  if callable(rules):  # built from the model's fields; the class count plays no part
    rules = rules(models.create(name, num_classes=1000))
  plan = []
  for path, params, stats in leaves:
    prefix, note = layout.match(rules, path, "torchvision")
    plan.append((path, prefix, layout.kind_of(params, stats), note, params, stats))
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
    out[key] = layout.to_numpy(value)
  return out


def from_torchvision(name: str, state_dict: Mapping[str, Any], *, num_classes: int = 1000) -> dict:
  """Flax variables for ``models.create(name, num_classes=num_classes)`` from a torchvision ``state_dict``.

  Args:
    name: the cnn_flax name (one of ``TORCHVISION_NAMES``; torchvision's ``googlenet`` is ``googlenet_bn``).
    state_dict: torchvision's parameter names -> numpy arrays (or CPU torch tensors). BatchNorm running statistics
      are required, ``num_batches_tracked`` is ignored, DenseNet's legacy key names are accepted. GoogLeNet state
      dicts may omit the aux heads (``aux_logits=False``), in which case create the model with
      ``aux_logits=False`` for training.
    num_classes: the classifier width the state dict has.

  Returns:
    float32 numpy arrays in the structure of ``model.init``: ``{"params": ..., "batch_stats": ...}`` (no
    ``batch_stats`` for models without BatchNorm).

  Raises:
    UserError: naming the key, on an unknown, missing or wrongly shaped entry, or a model torchvision lacks.
  """
  _check_torchvision_name(name)
  given = _normalise_state_dict(state_dict)
  model = models.create(name, num_classes=num_classes)
  leaves = layout.leaf_modules(layout.abstract_variables(model, train=True))
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
        value = torch_conv_to_flax(value)
      elif suffix == "weight" and kind == "dense":
        value = torch_dense_to_flax(value, layout.chw_of(note))
      collection = "batch_stats" if flax_name in ("mean", "var") else "params"
      layout.set_leaf(variables.setdefault(collection, {}), path, flax_name, np.ascontiguousarray(value, np.float32))
  extra = sorted(set(given) - used)
  if extra:
    raise UserError(f"state_dict for {name} has {len(extra)} unexpected key(s), e.g. {extra[0]!r}")
  return variables


def _torchvision_arrays(name: str, variables: Mapping) -> dict[str, Any]:
  """``to_torchvision_layout`` with array methods only, so that ``jax.eval_shape`` can run it on shapes."""
  out = {}
  for _, prefix, kind, note, params, stats in _torchvision_plan(name, layout.leaf_modules(variables)):
    if kind == "bn":
      arrays = {"weight": params["scale"], "bias": params["bias"], "running_mean": stats["mean"],
                "running_var": stats["var"]}
    else:
      kernel = params["kernel"]
      weight = flax_conv_to_torch(kernel) if kind == "conv" else flax_dense_to_torch(kernel, layout.chw_of(note))
      arrays = {"weight": weight, **({"bias": params["bias"]} if "bias" in params else {})}
    out.update({f"{prefix}.{suffix}": value for suffix, value in arrays.items()})
  return out


def to_torchvision_layout(name: str, variables: Mapping) -> dict[str, np.ndarray]:
  """The inverse of ``from_torchvision``, for exporting weights and for testing the mapping without torch.

  Args:
    name: one of ``TORCHVISION_NAMES``.
    variables: the model's ``{"params": ..., "batch_stats": ...}`` (GoogLeNet's with or without aux heads).

  Returns:
    A torchvision-named state dict of numpy arrays (without ``num_batches_tracked``).
  """
  _check_torchvision_name(name)
  return {k: np.ascontiguousarray(v) for k, v in _torchvision_arrays(name, variables).items()}


def expected_torchvision_shapes(name: str, *, num_classes: int = 1000, aux_logits: bool = True
                                ) -> dict[str, tuple[int, ...]]:
  """The state dict ``from_torchvision(name, ...)`` expects, computed from the model (nothing is stored).

  Args:
    name: one of ``TORCHVISION_NAMES``.
    num_classes: the classifier width.
    aux_logits: whether GoogLeNet's aux heads are included (ignored by other models).

  Returns:
    torchvision key -> shape.
  """
  _check_torchvision_name(name)
  abstract = layout.abstract_variables(models.create(name, num_classes=num_classes), train=True)
  if not aux_logits:
    abstract = {c: {k: v for k, v in tree.items() if k not in ("aux1", "aux2")} for c, tree in abstract.items()}
  shapes = jax.eval_shape(functools.partial(_torchvision_arrays, name), abstract)
  return {k: tuple(v.shape) for k, v in shapes.items()}


def torchvision_googlenet_input(x):
  """torchvision's ``transform_input`` for GoogLeNet, on NHWC images.

  torchvision's pretrained GoogLeNet (``transform_input=True``) re-normalises its ImageNet-normalised input to
  (x - 0.5) / 0.5 per channel before conv1. The affine map cannot be folded into conv1's weights exactly (conv1's
  zero padding would become non-zero), so apply this to the inputs of a converted pretrained GoogLeNet.

  Args:
    x: NHWC images normalised with ImageNet's mean and standard deviation.

  Returns:
    The images conv1 of torchvision's GoogLeNet sees, as a float32 jax array of the same shape.
  """
  mean = jnp.asarray([0.485, 0.456, 0.406], jnp.float32)
  std = jnp.asarray([0.229, 0.224, 0.225], jnp.float32)
  return x * (std / 0.5) + (mean - 0.5) / 0.5


# ------------------------------------------------------------------------------------------------------ files
def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a state dict from ``.safetensors`` (needs ``safetensors``), ``.npz`` or ``.pth``/``.pt`` (needs torch).

  Args:
    path: the weight file. Checkpoints that wrap the state dict (``{"state_dict": ...}`` or ``{"model": ...}``)
      are unwrapped.

  Returns:
    Key -> numpy array (torch's bfloat16/float16 tensors become float32).

  Raises:
    UserError: for a missing file, an unsupported extension, or a missing optional package.
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
    return {k: layout.to_numpy(v) for k, v in obj.items()}
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
    return {k: [layout.to_numpy(a) for a in v] for k, v in weights.items()}, {}
  raise UserError("Keras weights must be a keras Model or a dict {layer name: layer.get_weights()}, got "
                  f"{type(weights).__name__}")


def _keras_overrides(mapping: KerasMapping, arrays: Mapping[str, list[np.ndarray]]) -> dict[str, Any]:
  """Model fields read off the weights: the class count from the head, then the family's own."""
  if mapping.head not in arrays:
    raise UserError(f"Keras weights lack the classifier layer {mapping.head!r}: build the Keras model with "
                    "include_top=True (or add the head's arrays under that name)")
  return {"num_classes": int(arrays[mapping.head][0].shape[-1]), **mapping.overrides(arrays)}


def from_keras(name: str, weights) -> tuple[Any, dict]:
  """``(model, variables)`` reproducing a ``keras.applications`` model.

  The model is created with the fields the Keras network needs (v1 ResNet stride placement, ReLU6 and width
  multiplier for MobileNet, class count and VGG classifier width read from the weights). Inputs must be
  preprocessed as Keras's ``preprocess_input`` does (caffe-style BGR for VGG/ResNet). MobileNet matches Keras when
  every stride-2 layer sees an even size (inputs a multiple of 32): Keras pads (0, 1) before its stride-2
  depthwise convs whatever the size, Flax's 'SAME' only on even sizes.

  Args:
    name: a Keras application (VGG16, VGG19, ResNet50/101/152, DenseNet121/169/201, MobileNet; case-insensitive)
      or the cnn_flax name.
    weights: the Keras Model itself (``include_top=True``), or a dict mapping layer names to
      ``layer.get_weights()`` lists (as stored in Keras's .h5 weight files).

  Returns:
    The Flax module and its variables (float32 numpy arrays, ``{"params": ..., "batch_stats": ...}``).

  Raises:
    UserError: naming the layer, on a missing, unexpected or wrongly shaped layer, or an unsupported name.
  """
  keras_names = _keras_names()
  flax_name = keras_names.get(name.lower())
  if flax_name is None:
    raise UserError(f"no Keras conversion for {name!r}; supported: {', '.join(sorted(set(keras_names)))}")
  mapping = models.info(flax_name).keras
  arrays, keras_eps = _keras_arrays(weights)
  model = models.create(flax_name, **_keras_overrides(mapping, arrays))
  leaves = layout.leaf_modules(layout.abstract_variables(model, train=False))

  variables: dict = {"params": {}}
  folded_bias: dict[layout.Path, np.ndarray] = {}
  used = set()
  # Convs before BNs, so that a conv bias is known when its BatchNorm is converted.
  for path, params, stats in sorted(leaves, key=lambda leaf: layout.kind_of(leaf[1], leaf[2]) == "bn"):
    layer, note = layout.match(mapping.rules, path, "Keras")
    kind = layout.kind_of(params, stats)
    if layer not in arrays:
      raise UserError(f"Keras weights for {name} lack the layer {layer!r} (needed for Flax {'/'.join(path)})")
    used.add(layer)
    got = arrays[layer]
    if kind == "bn":
      if len(got) != 4:
        raise UserError(f"Keras layer {layer!r} has {len(got)} arrays; expected BatchNorm's gamma, beta, mean, var")
      gamma, beta, mean, var = (a.astype(np.float64) for a in got)
      mean = mean - folded_bias.pop(path[:-1], 0.0)
      keras_epsilon = keras_eps.get(layer, mapping.epsilon)
      if keras_epsilon is None:  # a registration without an epsilon for a model with BatchNorm
        raise ValueError(f"no Keras BatchNorm epsilon registered for {flax_name}")
      var = var + keras_epsilon - model.bn_epsilon
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
        layout.set_leaf(variables.setdefault(collection, {}), path, leaf, np.ascontiguousarray(value, np.float32))
  extra = sorted(set(arrays) - used)
  if extra:
    raise UserError(f"Keras weights have {len(extra)} layer(s) the {flax_name} model has no place for, e.g. "
                    f"{extra[0]!r}")
  return model, variables
