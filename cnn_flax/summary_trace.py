"""The jaxpr walk behind ``cnn_flax.summary``: per-layer rows and receptive fields of one traced inference.

How, without compiling or running anything: ``jax.make_jaxpr(model.apply)`` traces the inference graph
(``train=False``) on abstract inputs. During that trace ``nn.intercept_methods`` (``Recorder.intercept``) records
every ``nn.Conv`` / ``nn.Dense`` call (module path, kernel, strides, groups, parameters, output shape) and tags its
input and output with ``checkpoint_name``, an identity primitive that stays visible in the jaxpr. ``walk`` then
propagates receptive fields through every operation in call order, and picks up the pooling layers
(``reduce_window`` and spatial reductions), which are functions, not modules, and convolutions or matmuls done with
raw ``lax`` ops on parameters. The conventions (what counts as a MAC, how fields merge, why squeeze-and-excitation
gates are left out of them) are stated in ``cnn_flax.summary``'s docstring.
"""
from __future__ import annotations

import collections
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
from jax.extend import core as jcore

# (receptive field size, jump) in input pixels, and whether the field already spans the whole map (so that the
# two matmuls of an adaptive pool, over H then W, widen it once).
RF = tuple[int, int, bool]
# Where a value comes from, a bit mask: model variables, the image. Weights are VARS without IMAGE.
VARS, IMAGE = 1, 2
_IN_TAG, _OUT_TAG = "cnn_flax.summary.in:", "cnn_flax.summary.out:"
_POOL_KINDS = {"reduce_window_max": "max_pool", "reduce_window_min": "min_pool", "reduce_window_sum": "avg_pool",
               "reduce_window": "pool"}
_GLOBAL_KINDS = {"reduce_sum": "global_avg_pool", "reduce_max": "global_max_pool", "reduce_min": "global_min_pool"}


def tree_size(tree) -> int:
  """The number of scalars in all leaves of ``tree`` (arrays or abstract shapes)."""
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


class Recorder:
  """Collects the layer calls seen by the interceptor, then the rows produced by the jaxpr walk.

  Use: ``rec = Recorder(type(model).__name__)``; trace ``model.apply`` under ``nn.intercept_methods(rec.intercept)``
  with ``jax.make_jaxpr``; set ``rec.params`` to the parameter shapes; then ``walk`` the jaxpr. ``rec.rows`` holds
  one dict per conv, dense and pooling layer in call order (see ``cnn_flax.summary.model_stats``).
  """

  def __init__(self, root: str):
    self.root = root  # the model's class name, the first entry of every name stack
    self.calls: dict[str, dict[str, Any]] = {}
    self.rows: list[dict[str, Any]] = []
    self.open_layers = 0  # > 0 between a layer's input and output tags
    self.counters: collections.Counter = collections.Counter()
    self.params: Any = {}  # the model's parameter shapes, to name and size rows of raw lax ops
    self.claimed: set[str] = set()

  def intercept(self, next_fun, args, kwargs, context):
    """An ``nn.intercept_methods`` interceptor: records each ``nn.Conv``/``nn.Dense`` call and tags its input and
    output in the jaxpr; returns the call's output (unchanged in value)."""
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
        "params": tree_size(module.variables.get("params", {})),
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
      return path, tree_size({k: v for k, v in node.items() if not isinstance(v, dict)})
    return self.scope_name(scope, kind), 0

  def scope_name(self, scope: str, kind: str) -> str:
    """A fresh row name for a ``kind`` layer (pooling, raw op) in module ``scope``: ``scope/kind_index``."""
    prefix = "/".join(self._parts(scope))
    index = self.counters[(prefix, kind)]
    self.counters[(prefix, kind)] += 1
    return f"{prefix}/{kind}_{index}" if prefix else f"{kind}_{index}"

  def add_row(self, name: str, kind: str, out_aval, rf: RF | None, params: int = 0, macs: int = 0,
              **extra) -> None:
    """Appends a row for a layer whose output has abstract value ``out_aval`` and receptive field ``rf``."""
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


def walk(jaxpr, in_rfs: list[RF | None], in_origins: list[int], scope: str, rec: Recorder) -> list[RF | None]:
  """Propagates receptive fields and origins through ``jaxpr``; appends the rows of its layers to ``rec``.

  Args:
    jaxpr: the (open) jaxpr of the traced inference, or of a call inside it.
    in_rfs: the receptive field of each input variable (None for weights; ``(1, 1, False)`` for the image).
    in_origins: ``VARS``, ``IMAGE`` or 0 for each input variable (where its value comes from).
    scope: the module path of the enclosing call ('' at the top).
    rec: the ``Recorder`` that intercepted the trace.

  Returns:
    The receptive field of each output variable (None where it does not depend on the image).
  """
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


def _rule(eqn, in_rf: list[RF | None], in_origin: list[int], scope: str, rec: Recorder) -> list[RF | None]:
  """The receptive field of each output of one equation."""
  prim = eqn.primitive.name
  out_aval = eqn.outvars[0].aval
  # Operands with a 1x1 map that are broadcast over a larger output (an SE gate; see cnn_flax.summary) do
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
    return walk(sub, in_rf, in_origin, scope, rec)

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
      return [None]  # a value spread over the whole map (an SE gate): see cnn_flax.summary
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
