"""The layout half of ``cnn_flax.convert``: Flax variable trees walked module by module, mapping rules matched,
arrays moved between PyTorch's and Flax's layouts.

The functions here know no model family: the rules they apply come from the registry (see
``cnn_flax.models.registry.Rule``), and ``cnn_flax.convert`` uses them to import torchvision and Keras weights.
Layouts: a PyTorch conv weight is (out, in / groups, kh, kw), a Flax kernel (kh, kw, in / groups, out); a
PyTorch ``nn.Linear`` weight is (out, in), a Flax ``Dense`` kernel (in, out); a dense layer after a flatten sees
its input ordered (C, H, W) in PyTorch and (H, W, C) in the Flax models.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.models.registry import Rule

Path = tuple[str, ...]


# ------------------------------------------------------------------------------------------- layout transforms
# Array methods only (no np.* calls), so that jax.eval_shape can run them on shapes.
def torch_conv_to_flax(weight):
  """A PyTorch conv weight (out, in / groups, kh, kw) as a Flax kernel (kh, kw, in / groups, out)."""
  return weight.transpose(2, 3, 1, 0)


def flax_conv_to_torch(kernel):
  """The inverse of ``torch_conv_to_flax``: a Flax kernel (kh, kw, in, out) as a PyTorch weight (out, in, kh, kw)."""
  return kernel.transpose(3, 2, 0, 1)


def torch_dense_to_flax(weight, chw: tuple[int, int, int] | None = None):
  """A PyTorch ``nn.Linear`` weight (out, in) as a Flax ``Dense`` kernel (in, out).

  Args:
    weight: the (out, in) array.
    chw: ``(C, H, W)`` when the layer follows a flatten: PyTorch orders the ``in`` rows (C, H, W), the Flax
      models (H, W, C), so the rows are permuted as well as transposed. None for any other dense layer.

  Returns:
    The (in, out) kernel.
  """
  if chw is None:
    return weight.T
  c, h, w = chw
  return weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)


def flax_dense_to_torch(kernel, chw: tuple[int, int, int] | None = None):
  """The inverse of ``torch_dense_to_flax``: a Flax kernel (in, out) as a PyTorch weight (out, in).

  Args:
    kernel: the (in, out) array.
    chw: ``(C, H, W)`` of the flattened map when the layer follows a flatten, else None.

  Returns:
    The (out, in) weight, its columns in PyTorch's (C, H, W) order where ``chw`` is given.
  """
  if chw is None:
    return kernel.T
  c, h, w = chw
  return kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)


def chw_of(note) -> tuple[int, int, int] | None:
  """``(C, H, W)`` from a rule's ``("chw", C, H, W)`` layout note; None for any other note."""
  return tuple(note[1:]) if isinstance(note, tuple) and note[0] == "chw" else None


# ----------------------------------------------------------------------------------------------- the Flax side
def abstract_variables(model, train: bool) -> dict:
  """Shapes of ``model.init``'s variables, without computing anything.

  Args:
    model: a Flax module with the zoo's ``__call__(x, train)``.
    train: the mode to initialise in (GoogLeNet creates its aux heads only in training).

  Returns:
    ``jax.ShapeDtypeStruct`` leaves in the structure of ``model.init`` on one 224 px RGB image (no parameter
    shape of the registered models depends on the resolution).
  """
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  init = functools.partial(model.init, train=train)
  return jax.eval_shape(init, {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)


def leaf_modules(variables: Mapping) -> list[tuple[Path, Mapping, Mapping | None]]:
  """Every module of ``variables`` that owns arrays, in tree order.

  Args:
    variables: ``{"params": ..., "batch_stats": ...}`` (arrays or abstract shapes).

  Returns:
    ``(path, own params, own batch_stats or None)`` per module: only the module's own leaves, not its children's.
  """
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


def kind_of(params: Mapping, stats: Mapping | None) -> str:
  """``"bn"`` for a BatchNorm (it has a running mean), else ``"conv"`` (4-D kernel) or ``"dense"``."""
  if stats is not None and "mean" in stats:
    return "bn"
  return "conv" if len(params["kernel"].shape) == 4 else "dense"


def match(rules: Sequence[Rule], path: Path, where: str) -> tuple[str, Any]:
  """The source layer name and layout note of the first rule whose pattern matches the whole ``path``.

  Args:
    rules: the family's table (see ``cnn_flax.models.registry.Rule``).
    path: the Flax module path.
    where: the source's name for the error message ("torchvision", "Keras").

  Returns:
    ``(source name, note)``; raises ``ValueError`` (a bug in a table, not the user's) when no rule matches.
  """
  joined = "/".join(path)
  for pattern, template, note in rules:
    m = re.fullmatch(pattern, joined)
    if m:
      return (template(m) if callable(template) else m.expand(template)), note
  # Only reachable if a model file renames a module: a bug here, not the user's.
  raise ValueError(f"no {where} name for the Flax module {joined!r}")


def set_leaf(tree: dict, path: Path, leaf: str, value) -> None:
  """Sets ``tree[path...][leaf] = value``, creating the nested dicts on the way."""
  for p in path:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def to_numpy(value) -> np.ndarray:
  """A numpy array from numpy, jax or torch tensors (without importing torch)."""
  if hasattr(value, "detach"):  # torch.Tensor: bf16/fp16 have no numpy equivalent worth keeping
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    value = value.numpy()
  return np.asarray(value)
