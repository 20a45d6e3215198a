"""Inference artifacts of a trained workdir: a serialized `jax.export` module (StableHLO) or a TensorFlow
SavedModel through `jax2tf` (the TF Serving / TFLite path).

Both take a batch of uint8 NHWC images already at the model's size and channels (what `predict.py` and evaluation
make of an image: resize or shorter-side resize plus centre crop, `dataset.eval_resize`) and return float32 logits;
normalisation is inside. The batch dimension is symbolic, so one artifact serves any batch size. `export.json`
beside the artifact records the input shape, the class names and how the model was made.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax import foldbn, inference, steps
from cnn_flax.errors import UserError

FORMATS = ("stablehlo", "saved_model")
STABLEHLO_FILE = "model.stablehlo"


def inference_function(restored: inference.Restored, fold_bn: bool = False) -> tuple[Callable, dict, int]:
  """(f(variables, uint8 images) -> float32 logits, variables, number of BatchNorms folded)."""
  exp = restored.exp
  model, mean, std, dtype = exp.step_config.model, exp.step_config.mean, exp.step_config.std, exp.dtype
  variables = inference.variables(restored)
  normalise = lambda images: steps.normalize(images, mean, std, dtype)
  if not fold_bn:
    return (lambda v, x: model.apply(v, normalise(x), train=False).astype(jnp.float32)), variables, 0
  example = jax.ShapeDtypeStruct((1, *exp.image_shape), jnp.float32)
  pairs = foldbn.conv_bn_pairs(model, variables, example)
  folded, biases = foldbn.fold(variables, pairs)

  def fn(v, x):  # the biases travel keyed by 'a/b/c' (TensorFlow's trackable dicts want string keys)
    paths = {tuple(k.split("/")): b for k, b in v["biases"].items()}
    return foldbn.folded_apply(model, pairs, v["variables"], paths, normalise(x)).astype(jnp.float32)

  return fn, {"variables": folded, "biases": {"/".join(k): b for k, b in biases.items()}}, len(pairs)


def export(restored: inference.Restored, fmt: str, output: str, fold_bn: bool = False) -> dict[str, Any]:
  """Writes the artifact to `output` (a directory) and returns what export.json records."""
  if fmt not in FORMATS:
    raise UserError(f"--format={fmt!r}: choose one of {', '.join(FORMATS)}")
  if os.path.exists(output) and os.listdir(output):
    raise UserError(f"--output {output!r} is not empty; choose a new directory (nothing is overwritten)")
  fn, variables, folded = inference_function(restored, fold_bn)
  exp = restored.exp
  tmp = output.rstrip("/") + ".partial"  # written aside, renamed when complete: a failure leaves no half artifact
  os.makedirs(tmp, exist_ok=True)
  if fmt == "stablehlo":
    _stablehlo(fn, variables, exp.image_shape, tmp)
  else:
    _saved_model(fn, variables, exp.image_shape, tmp)
  meta = {"format": fmt, "input": {"shape": ["batch", *exp.image_shape], "dtype": "uint8",
                                   "preprocessing": f"resize to {exp.image_shape[0]}x{exp.image_shape[1]}"
                                   + (f" after the shorter side to {restored.config.dataset.eval_resize} and a "
                                      "centre crop" if restored.config.dataset.eval_resize else "")},
          "output": {"shape": ["batch", exp.dataset.num_classes], "dtype": "float32", "meaning": "logits"},
          "class_names": list(map(str, exp.dataset.class_names)), "model": restored.config.model.name,
          "step": restored.step, "batchnorm_folded": folded, "dtype": np.dtype(exp.dtype).name}
  with open(os.path.join(tmp, "export.json"), "w") as f:
    json.dump(meta, f, indent=2)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  if os.path.exists(output):
    os.rmdir(output)  # an empty directory the user made for it
  os.replace(tmp, output)
  return meta


def _stablehlo(fn, variables, image_shape, directory: str) -> None:
  # The weights are closed over: the module is self-contained, one file to load and call.
  images = jax.ShapeDtypeStruct((jax.export.symbolic_shape("b")[0], *image_shape), jnp.uint8)
  exported = jax.export.export(jax.jit(lambda x: fn(variables, x)))(images)
  with open(os.path.join(directory, STABLEHLO_FILE), "wb") as f:
    f.write(exported.serialize())


def load_stablehlo(directory: str) -> Callable:
  """The exported function: uint8 images (any batch) -> logits."""
  with open(os.path.join(directory, STABLEHLO_FILE), "rb") as f:
    return jax.export.deserialize(bytearray(f.read())).call


def _saved_model(fn, variables, image_shape, directory: str) -> None:
  import tensorflow as tf  # imported here only: training never needs TensorFlow
  from jax.experimental import jax2tf

  # The weights become tf.Variables (no 2 GB graph-constant limit); the function takes them as its first argument.
  weights = jax.tree.map(lambda a: tf.Variable(np.asarray(a), trainable=False), variables)
  converted = jax2tf.convert(fn, polymorphic_shapes=[None, f"(b, {', '.join(map(str, image_shape))})"],
                             with_gradient=False)
  module = tf.Module()
  module.weights = weights
  module.serve = tf.function(lambda x: converted(module.weights, x), autograph=False,
                             input_signature=[tf.TensorSpec([None, *image_shape], tf.uint8, name="images")])
  tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})
