"""Per-layer inspection of a registered model: output shapes, parameters, MACs and receptive fields.

Why: the zoo's models are meant to be the published ones, and the published figures to check them against are
parameter counts and multiply-accumulates (MACs). A stride in the wrong place leaves the parameter count intact but
changes the MACs, so both are reported, per layer and in total, together with the receptive field that explains
the architecture (how much of the image each layer sees). ``python -m cnn_flax.summary --model vgg16`` prints the
table; ``model_stats`` returns the same data for tests and notebooks.

How, without compiling or running anything: ``jax.eval_shape(model.init)`` gives the variable shapes and
``jax.make_jaxpr(model.apply)`` traces the inference graph (``train=False``) on abstract inputs. During that trace
``nn.intercept_methods`` records every ``nn.Conv`` / ``nn.Dense`` call (module path, kernel, strides, groups,
parameters, output shape) and tags its input and output with ``checkpoint_name``, an identity primitive that stays
visible in the jaxpr. A walk over the jaxpr then propagates receptive fields through every operation in call order,
and picks up the pooling layers (``reduce_window`` and spatial reductions), which are functions, not modules.

Conventions:
* MACs count conv and dense layers only, as papers do: conv = H_out * W_out * K_h * K_w * (C_in / groups) * C_out,
  dense = in * out (times the positions it is applied at); no biases, BatchNorm, activations or pooling. XLA's cost
  analysis reports about twice this figure as FLOPs (one multiply-add = 2 FLOPs). A convolution or matmul written
  with raw ``lax`` ops on parameters (``lenet5_paper``'s partially connected C3) is a row of its own, counted with
  the full kernel it actually multiplies (masked-out weights included).
* ``params`` counts trainable parameters (the ``params`` collection); BatchNorm running statistics are reported
  separately as ``non_trainable``. Only the inference graph is traced: GoogLeNet's auxiliary heads, which exist
  only with ``train=True``, are absent from the rows and from ``params``; ``train_only_params`` says how many
  parameters they add.
* Receptive field: size r and jump j (distance in input pixels between neighbouring outputs) of each layer's output,
  r_out = r_in + (k_eff - 1) * j_in, j_out = j_in * s, with k_eff = (k - 1) * dilation + 1; padding is ignored and
  r is not clipped to the image, as in the usual tables. Where paths merge (Inception concat, residual add,
  DenseNet concat) the largest input field is taken. Global pooling, flattening and an adaptive pool that is not an
  identity are treated as a window over the whole map (r += (H - 1) * j, j *= H; the adaptive pool, two matmuls
  with constant matrices, gets no row of its own). Simplifications: one number per
  layer (the larger of the two spatial axes; the zoo's kernels and images are square), NHWC layout, and values
  broadcast over the spatial axes (squeeze-and-excitation gates) are treated like parameters: they make every later
  layer depend on the whole image, which would bury the field of the convolutional path that the table is for.
* Defaults: the registered ``input_size`` and ``in_channels``; 10 classes for models registered at 32 px (LeNet-5
  and the CIFAR networks, whose references are 10-class problems), 1000 otherwise (ImageNet).
"""
from __future__ import annotations

import argparse
import ast
import collections
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from jax.extend import core as jcore

from cnn_flax import models
from cnn_flax.errors import UserError

# (receptive field size, jump) in input pixels, and whether the field already spans the whole map (so that the
# two matmuls of an adaptive pool, over H then W, widen it once).
RF = tuple[int, int, bool]
# Where a value comes from, a bit mask: model variables, the image. Weights are VARS without IMAGE.
VARS, IMAGE = 1, 2
_IN_TAG, _OUT_TAG = "cnn_flax.summary.in:", "cnn_flax.summary.out:"
_POOL_KINDS = {"reduce_window_max": "max_pool", "reduce_window_min": "min_pool", "reduce_window_sum": "avg_pool",
               "reduce_window": "pool"}
_GLOBAL_KINDS = {"reduce_sum": "global_avg_pool", "reduce_max": "global_max_pool", "reduce_min": "global_min_pool"}


def default_num_classes(info: models.ModelInfo) -> int:
  """10 for models registered at 32 px (LeNet-5, CIFAR networks), 1000 (ImageNet) otherwise."""
  return 10 if info.input_size == 32 else 1000


def _size(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def _pair(v, default: int = 1) -> tuple[int, ...]:
  if v is None:
    return (default, default)
  return (v, v) if isinstance(v, int) else tuple(v)


def _spatial(aval) -> tuple[int, int] | None:
  shape = getattr(aval, "shape", ())
  return tuple(shape[1:3]) if len(shape) == 4 else None


def _merge(rfs: Sequence[RF | None]) -> RF | None:
  known = [rf for rf in rfs if rf is not None]
  return max(known) if known else None


def _window(rf: RF | None, kernel: int, stride: int) -> RF | None:
  """One sliding window of ``kernel`` taps (dilation already applied) and ``stride``."""
  if rf is None:
    return None
  r, j, whole = rf
  return r + (kernel - 1) * j, j * stride, whole


def _whole_map(rf: RF | None, aval) -> RF | None:
  """A window covering the whole (H, W) map of ``aval`` (global pooling, flattening)."""
  spatial = _spatial(aval)
  if rf is None or spatial is None or rf[2]:
    return rf
  r, j, _ = _window(rf, max(spatial), max(spatial))
  return r, j, True


class _Recorder:
  """Collects the layer calls seen by the interceptor, then the rows produced by the jaxpr walk."""

  def __init__(self, root: str):
    self.root = root  # the model's class name, the first entry of every name stack
    self.calls: dict[str, dict[str, Any]] = {}
    self.rows: list[dict[str, Any]] = []
    self.open_layers = 0  # > 0 between a layer's input and output tags
    self.counters: collections.Counter = collections.Counter()
    self.params: Any = {}  # the model's parameter shapes, to name and size rows of raw lax ops
    self.claimed: set[str] = set()

  def intercept(self, next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, (nn.Conv, nn.Dense)) or not args:
      return next_fun(*args, **kwargs)
    tag = str(len(self.calls))
    x = checkpoint_name(args[0], _IN_TAG + tag)
    y = next_fun(x, *args[1:], **kwargs)
    kernel_shape = tuple(module.variables["params"]["kernel"].shape)
    is_conv = isinstance(module, nn.Conv)
    self.calls[tag] = {
        "name": "/".join(module.path) or type(module).__name__,
        "kind": "conv" if is_conv else "dense",
        "input_shape": tuple(args[0].shape[1:]),
        "params": _size(module.variables.get("params", {})),
        # kernel.size is K_h*K_w*(C_in/groups)*C_out (or in*out); it is applied at every output position.
        "macs": math.prod(kernel_shape) * math.prod(y.shape[1:-1]),
        "kernel": kernel_shape[:-2] if is_conv else kernel_shape,
        "strides": _pair(module.strides) if is_conv else None,
        "groups": module.feature_group_count if is_conv else None,
    }
    return checkpoint_name(y, _OUT_TAG + tag)

  def _parts(self, scope: str) -> list[str]:
    parts = [p for p in scope.split("/") if p]
    return parts[1:] if parts and parts[0] == self.root else parts

  def raw_layer(self, scope: str, kind: str) -> tuple[str, int]:
    """Name and parameter count of a conv/matmul on weights done with raw lax ops inside module ``scope``.

    The first such op of a module takes the module's name and its own (non-submodule) parameters.
    """
    parts = self._parts(scope)
    node = self.params
    for p in parts:
      node = node.get(p, {}) if isinstance(node, dict) else {}
    path = "/".join(parts)
    if parts and isinstance(node, dict) and node and path not in self.claimed:
      self.claimed.add(path)
      return path, _size({k: v for k, v in node.items() if not isinstance(v, dict)})
    return self.scope_name(scope, kind), 0

  def scope_name(self, scope: str, kind: str) -> str:
    prefix = "/".join(self._parts(scope))
    index = self.counters[(prefix, kind)]
    self.counters[(prefix, kind)] += 1
    return f"{prefix}/{kind}_{index}" if prefix else f"{kind}_{index}"

  def add_row(self, name: str, kind: str, out_aval, rf: RF | None, params: int = 0, macs: int = 0,
              **extra) -> None:
    self.rows.append({"name": name, "kind": kind, "output_shape": tuple(out_aval.shape[1:]), "params": params,
                      "macs": macs, "receptive_field": rf[0] if rf else None, "jump": rf[1] if rf else None,
                      **extra})


def _sub_jaxpr(eqn):
  """The jaxpr a call-like equation (jit, custom_jvp/vjp, remat) runs on its own operands, if any."""
  for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    sub = eqn.params.get(key)
    if isinstance(sub, jcore.ClosedJaxpr):
      sub = sub.jaxpr
    if isinstance(sub, jcore.Jaxpr) and len(sub.invars) == len(eqn.invars) \
        and len(sub.outvars) == len(eqn.outvars):
      return sub
  return None


def _walk(jaxpr, in_rfs: list[RF | None], in_origins: list[int], scope: str, rec: _Recorder) -> list[RF | None]:
  """Propagates receptive fields and origins through ``jaxpr``; appends pooling and raw-op rows to ``rec``."""
  rfs: dict[Any, RF | None] = {}
  origins: dict[Any, int] = {}  # constants: 0

  def read(v):
    if isinstance(v, jcore.Literal):
      return None, 0
    return rfs.get(v), origins.get(v, 0)

  for v, rf, origin in zip(jaxpr.invars, in_rfs, in_origins, strict=True):
    rfs[v], origins[v] = rf, origin
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    in_rf, in_origin = [rf for rf, _ in ins], [o for _, o in ins]
    stack = str(eqn.source_info.name_stack)
    eqn_scope = f"{scope}/{stack}" if scope and stack else scope or stack
    out = _rule(eqn, in_rf, in_origin, eqn_scope, rec)
    origin = 0
    for o in in_origin:
      origin |= o
    for v, rf in zip(eqn.outvars, out, strict=True):
      rfs[v], origins[v] = rf, origin
  return [read(v)[0] for v in jaxpr.outvars]


def _rule(eqn, in_rf: list[RF | None], in_origin: list[int], scope: str, rec: _Recorder) -> list[RF | None]:
  """The receptive field of each output of one equation."""
  prim = eqn.primitive.name
  out_aval = eqn.outvars[0].aval
  # Operands with a 1x1 map that are broadcast over a larger output (an SE gate; see the module docstring) do
  # not count; lax broadcasts size-1 axes itself, so this applies to every elementwise op.
  out_spatial = _spatial(out_aval)
  spread = lambda v: out_spatial and math.prod(out_spatial) > 1 and _spatial(v.aval) == (1, 1)
  merged = [_merge([rf for v, rf in zip(eqn.invars, in_rf, strict=True) if not spread(v)])] * len(eqn.outvars)

  if prim == "name":  # our tags (other checkpoint names pass through)
    label = eqn.params["name"]
    if label.startswith(_IN_TAG):
      rec.open_layers += 1
    elif label.startswith(_OUT_TAG):
      rec.open_layers -= 1
      call = rec.calls[label[len(_OUT_TAG):]]
      rec.add_row(call.pop("name"), call.pop("kind"), out_aval, in_rf[0], **call)
    return in_rf

  sub = _sub_jaxpr(eqn)
  if sub is not None:
    return _walk(sub, in_rf, in_origin, scope, rec)

  if prim == "conv_general_dilated":
    _, rhs_spec, out_spec = eqn.params["dimension_numbers"]
    rhs_shape = eqn.invars[1].aval.shape
    dilation = max(eqn.params["rhs_dilation"] or (1,))
    kernel = max((rhs_shape[d] - 1) * dilation + 1 for d in rhs_spec[2:])
    rf = _window(in_rf[0], kernel, max(eqn.params["window_strides"]))
    if rec.open_layers == 0 and in_origin[1] == VARS and in_origin[0] & IMAGE:
      # A convolution with weights outside nn.Conv: count it as computed (full kernel, every output position).
      positions = math.prod(out_aval.shape[d] for d in out_spec[2:])
      name, params = rec.raw_layer(scope, "conv")
      rec.add_row(name, "conv", out_aval, rf, params=params, macs=math.prod(rhs_shape) * positions,
                  kernel=tuple(rhs_shape[d] for d in rhs_spec[2:]), strides=tuple(eqn.params["window_strides"]),
                  groups=eqn.params["feature_group_count"])
    return [rf]

  if prim in _POOL_KINDS and in_rf[0] is not None and _spatial(eqn.invars[0].aval):
    dims, strides = eqn.params["window_dimensions"], eqn.params["window_strides"]
    dilation = eqn.params.get("window_dilation") or (1,) * len(dims)
    kernel = max((dims[a] - 1) * dilation[a] + 1 for a in (1, 2))
    stride = max(strides[1], strides[2])
    if kernel == 1 and stride == 1:
      return merged  # a window over channels only (local response normalisation)
    rf = _window(in_rf[0], kernel, stride)
    rec.add_row(rec.scope_name(scope, _POOL_KINDS[prim]), _POOL_KINDS[prim], out_aval, rf,
                kernel=(dims[1], dims[2]), strides=(strides[1], strides[2]))
    return [rf]

  if prim in _GLOBAL_KINDS and in_rf[0] is not None and _spatial(eqn.invars[0].aval):
    if {1, 2} <= set(eqn.params["axes"]):
      rf = _whole_map(in_rf[0], eqn.invars[0].aval)
      rec.add_row(rec.scope_name(scope, _GLOBAL_KINDS[prim]), _GLOBAL_KINDS[prim], out_aval, rf)
      return [rf]
    if {1, 2} & set(eqn.params["axes"]):
      return [_whole_map(in_rf[0], eqn.invars[0].aval)]
    return merged

  if prim == "reshape" and in_rf[0] is not None and _spatial(eqn.invars[0].aval):
    if _spatial(out_aval) != _spatial(eqn.invars[0].aval):  # flattening the map
      return [_whole_map(in_rf[0], eqn.invars[0].aval)]
    return merged

  if prim == "slice" and in_rf[0] is not None and _spatial(eqn.invars[0].aval):
    strides = eqn.params.get("strides") or (1,) * out_aval.ndim
    r, j, whole = in_rf[0]
    return [(r, j * max(strides[1], strides[2]), whole)]  # subsampling (option-A shortcuts)

  if prim == "broadcast_in_dim" and _spatial(out_aval):
    source = _spatial(eqn.invars[0].aval)
    if math.prod(_spatial(out_aval)) > (math.prod(source) if source else 1):
      return [None]  # a value spread over the whole map (an SE gate): see the module docstring
    return merged

  if prim == "dot_general":
    contract, _ = eqn.params["dimension_numbers"]  # ((lhs, rhs) contracting, (lhs, rhs) batch)
    rfs = list(in_rf)
    for i, axes in enumerate(contract):
      if rfs[i] is not None and _spatial(eqn.invars[i].aval) and {1, 2} & set(axes):
        rfs[i] = _whole_map(rfs[i], eqn.invars[i].aval)  # a non-identity adaptive pool: the whole map
    rf = _merge(rfs)
    if rec.open_layers == 0 and VARS in in_origin and any(o & IMAGE for o in in_origin):
      # A matmul of activations with weights outside nn.Dense.
      weight_shape = eqn.invars[in_origin.index(VARS)].aval.shape
      name, params = rec.raw_layer(scope, "dense")
      rec.add_row(name, "dense", out_aval, rf, params=params,
                  macs=math.prod(weight_shape) * math.prod(out_aval.shape[1:-1]), kernel=tuple(weight_shape))
    return [rf] * len(eqn.outvars)

  return merged


def model_stats(name: str, image_size: int | None = None, num_classes: int | None = None,
                in_channels: int | None = None, **overrides: Any) -> dict[str, Any]:
  """Parameters, MACs and per-layer rows of the registered model ``name``, traced on one abstract image.

  Args:
    name: a registered model name (``cnn_flax.models.names()``); unknown names raise ``UserError``.
    image_size: square input size; default the model's registered ``input_size``.
    num_classes: default 10 for models registered at 32 px, else 1000 (see ``default_num_classes``).
    in_channels: default the registered ``in_channels``.
    **overrides: module fields passed to ``models.create`` (e.g. ``width_multiplier=0.5``).

  Returns:
    A dict with ``params`` (trainable), ``non_trainable`` (e.g. BatchNorm statistics), ``train_only_params``,
    ``macs`` (conv + dense), ``receptive_field`` and ``jump`` of the output, ``input_shape``, ``output_shape``,
    and ``layers``: one dict per conv, dense and pooling layer in call order with ``name``, ``kind``,
    ``output_shape`` (without N), ``params``, ``macs``, ``receptive_field``, ``jump`` (and, where they apply,
    ``kernel``, ``strides``, ``groups``, ``input_shape``).
  """
  info = models.info(name)
  image_size = info.input_size if image_size is None else image_size
  num_classes = default_num_classes(info) if num_classes is None else num_classes
  in_channels = info.in_channels if in_channels is None else in_channels
  model = models.create(name, num_classes=num_classes, **overrides)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}

  def init(train: bool):
    return jax.eval_shape(lambda x: model.init(rngs, x, train=train), x)

  rec = _Recorder(type(model).__name__)

  def apply(variables, x):
    with nn.intercept_methods(rec.intercept):
      return model.apply(variables, x, train=False)

  try:
    variables = init(False)
    closed = jax.make_jaxpr(apply)(variables, x)
  except (ValueError, TypeError, ZeroDivisionError) as e:
    if (image_size, in_channels) == (info.input_size, info.in_channels):
      raise  # the reference input must work: a bug in the model, not the user's to fix
    raise UserError(f"model {name!r} cannot run on {image_size}x{image_size}x{in_channels} inputs: "
                    f"{type(e).__name__}: {e}") from None
  rec.params = variables.get("params", {})
  params = _size(variables.get("params", {}))
  train_only = 0
  if getattr(model, "aux_logits", False):  # heads built only in training (GoogLeNet)
    train_only = _size(init(True).get("params", {})) - params

  num_weights = len(jax.tree_util.tree_leaves(variables))
  in_rfs = [None] * num_weights + [(1, 1, False)]  # make_jaxpr flattens (variables, x) in that order
  out_rf = _walk(closed.jaxpr, in_rfs, [VARS] * num_weights + [IMAGE], "", rec)
  out_aval = closed.jaxpr.outvars[0].aval if closed.jaxpr.outvars else None
  return {
      "model": name,
      "input_shape": tuple(x.shape[1:]),
      "output_shape": tuple(out_aval.shape[1:]) if out_aval is not None else None,
      "num_classes": num_classes,
      "params": params,
      "non_trainable": _size({k: v for k, v in variables.items() if k != "params"}),
      "train_only_params": train_only,
      "macs": sum(row["macs"] for row in rec.rows),
      "receptive_field": out_rf[0][0] if out_rf and out_rf[0] else None,
      "jump": out_rf[0][1] if out_rf and out_rf[0] else None,
      "layers": rec.rows,
  }


def format_macs(macs: int) -> str:
  return f"{macs / 1e9:.3f} G" if macs >= 1e9 else f"{macs / 1e6:.3f} M"


def format_table(stats: dict[str, Any]) -> str:
  """The per-layer table with the totals at the bottom."""
  header = ("layer", "kind", "output", "params", "MACs", "RF", "jump")
  lines = [header]
  for row in stats["layers"]:
    lines.append((row["name"], row["kind"], "x".join(map(str, row["output_shape"])), f"{row['params']:,}",
                  f"{row['macs']:,}", "-" if row["receptive_field"] is None else str(row["receptive_field"]),
                  "-" if row["jump"] is None else str(row["jump"])))
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  # Names, kinds and shapes left-aligned, numbers right-aligned.
  fmt = lambda line: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True)))
  rule = "-" * len(fmt(header))
  out = [f"{stats['model']}: input {'x'.join(map(str, stats['input_shape']))}, {stats['num_classes']} classes",
         rule, fmt(header), rule, *map(fmt, lines[1:]), rule,
         f"Total params: {stats['params']:,} trainable"
         + (f" (+ {stats['non_trainable']:,} BatchNorm statistics / other state)" if stats["non_trainable"] else ""),
         f"Total MACs: {format_macs(stats['macs'])} (conv + dense; XLA's cost analysis counts 2 FLOPs per MAC)"]
  if stats["train_only_params"]:
    out.append(f"Training-only heads (not traced above): + {stats['train_only_params']:,} params")
  return "\n".join(out)


def _parse_override(text: str) -> tuple[str, Any]:
  key, sep, value = text.partition("=")
  if not sep or not key.isidentifier():
    raise UserError(f"--override expects KEY=VALUE (e.g. width_multiplier=0.5), got {text!r}")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value  # a bare string such as a shortcut type


def main(argv: Sequence[str] | None = None) -> None:
  from cnn_flax import cli  # absl/ml_collections: only the command line needs them

  parser = argparse.ArgumentParser(prog="python -m cnn_flax.summary", description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="a registered name (cnn_flax.models.names())")
  parser.add_argument("--image_size", type=int, default=None, help="default: the model's reference size")
  parser.add_argument("--num_classes", type=int, default=None, help="default: 10 for 32 px models, else 1000")
  parser.add_argument("--in_channels", type=int, default=None, help="default: the model's reference channels")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="a module field for models.create, e.g. width_multiplier=0.5 (repeatable)")
  args = parser.parse_args(argv)

  def run():
    overrides = dict(_parse_override(o) for o in args.override)
    stats = model_stats(args.model, args.image_size, args.num_classes, args.in_channels, **overrides)
    print(format_table(stats))

  cli.run_user_command(run)


if __name__ == "__main__":
  main()
