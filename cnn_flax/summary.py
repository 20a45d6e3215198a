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
and picks up the pooling layers (``reduce_window`` and spatial reductions), which are functions, not modules. The
walk lives in ``cnn_flax.summary_trace``.

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
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnn_flax import models, summary_trace
from cnn_flax.errors import UserError
from cnn_flax.models import fastconv


def default_num_classes(info: models.ModelInfo) -> int:
  """10 for models registered at 32 px (LeNet-5, CIFAR networks), 1000 (ImageNet) otherwise."""
  return 10 if info.input_size == 32 else 1000


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

  rec = summary_trace.Recorder(type(model).__name__)

  def apply(variables, x):
    # The CPU fast paths compute convolutions as dots and shifted sums: trace the plain convolutions the table
    # (and its receptive fields) is about.
    with nn.intercept_methods(rec.intercept), fastconv.plain():
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
  params = summary_trace.tree_size(variables.get("params", {}))
  train_only = 0
  if getattr(model, "aux_logits", False):  # heads built only in training (GoogLeNet)
    train_only = summary_trace.tree_size(init(True).get("params", {})) - params

  num_weights = len(jax.tree_util.tree_leaves(variables))
  in_rfs = [None] * num_weights + [(1, 1, False)]  # make_jaxpr flattens (variables, x) in that order
  in_origins = [summary_trace.VARS] * num_weights + [summary_trace.IMAGE]
  out_rf = summary_trace.walk(closed.jaxpr, in_rfs, in_origins, "", rec)
  out_aval = closed.jaxpr.outvars[0].aval if closed.jaxpr.outvars else None
  return {
      "model": name,
      "input_shape": tuple(x.shape[1:]),
      "output_shape": tuple(out_aval.shape[1:]) if out_aval is not None else None,
      "num_classes": num_classes,
      "params": params,
      "non_trainable": summary_trace.tree_size({k: v for k, v in variables.items() if k != "params"}),
      "train_only_params": train_only,
      "macs": sum(row["macs"] for row in rec.rows),
      "receptive_field": out_rf[0][0] if out_rf and out_rf[0] else None,
      "jump": out_rf[0][1] if out_rf and out_rf[0] else None,
      "layers": rec.rows,
  }


def format_macs(macs: int) -> str:
  """``macs`` as text with three decimals: in G (billions) from 1e9 on, else in M (millions)."""
  return f"{macs / 1e9:.3f} G" if macs >= 1e9 else f"{macs / 1e6:.3f} M"


def format_table(stats: dict[str, Any]) -> str:
  """The per-layer table with the totals at the bottom.

  Args:
    stats: what ``model_stats`` returns.

  Returns:
    The table as lines of text: a title (model, input, classes), one row per layer (name, kind, output shape,
    parameters, MACs, receptive field, jump), then the parameter and MAC totals and any training-only parameters.
  """
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
  """``python -m cnn_flax.summary``: prints ``format_table`` for ``--model``; user errors exit with one line.

  Args:
    argv: the command-line arguments without the program name; None reads ``sys.argv``.
  """
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
