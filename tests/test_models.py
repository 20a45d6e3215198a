"""Every registered model, the same tests (as timm's tests/test_models.py): a model registered later gets them too.

Per name in `models.names()`, at a small size: a training-mode and an eval-mode forward pass, a gradient step that
changes every parameter, BatchNorm statistics that move in training only, the per-stage feature maps, the layer
summary, and, where the family registers a weight mapping, the torchvision round trip and the Keras rule coverage.
"Small" means small images, batch 2, and the fields that repeat blocks or set widths, where a model has them, cut
down (`SMALL`): the test is about each registered configuration's code path, not its depth; the published
parameter counts of the full models are the per-family tests' (tests/models/test_*.py).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_flax import convert, models, summary
from cnn_flax import convert_layout as layout
from tests.models.model_testing import host_variables, run_compiled

NAMES = models.names()
# Fields that make a model smaller wherever a model has them (by field name: no per-model table).
SMALL = {"stage_sizes": lambda v: (1,) * len(v), "block_sizes": lambda v: (1,) * len(v),
         "classifier_width": lambda v: 32, "width_multiplier": lambda v: 0.25}


def small_model(name, num_classes=10):
  probe = models.create(name, num_classes=num_classes)
  fields = {f.name: getattr(probe, f.name) for f in dataclasses.fields(probe) if f.name in SMALL}
  return models.create(name, num_classes=num_classes, **{k: SMALL[k](v) for k, v in fields.items()})


def smallest_size(model, channels):
  """The smallest of a few sizes the model accepts (AlexNet's unpadded stem needs about 64 px), by tracing only."""
  for size in (32, 48, 64, 80, 96):
    try:
      jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                     jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32))
      return size
    except (ValueError, TypeError, ZeroDivisionError):
      continue
  raise AssertionError(f"{model} accepts none of the small sizes")


def small_input(name, batch=2):
  channels = models.info(name).in_channels
  size = smallest_size(small_model(name), channels)
  return np.random.default_rng(0).standard_normal((batch, size, size, channels)).astype(np.float32)


def _logits(out):
  return out["logits"] if isinstance(out, dict) else out


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_batch_statistics(name):
  model, x = small_model(name), small_input(name)
  variables = host_variables(model, x, train=True)
  labels = jnp.array([1, 7])

  def run(variables, x):
    def loss_fn(params):
      out, updates = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.key(0)})
      aux = out.get("aux_logits", ()) if isinstance(out, dict) else ()
      loss = sum(optax.softmax_cross_entropy_with_integer_labels(o, labels).mean() for o in (_logits(out), *aux))
      return loss, (out, updates)

    (loss, (out, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    eval_logits = model.apply(variables, x, train=False)
    new_params = jax.tree.map(lambda p, g: p - 0.1 * g, variables["params"], grads)
    return loss, out, updates, grads, eval_logits, model.apply({**variables, "params": new_params}, x, train=False)

  loss, out, updates, grads, eval_logits, after = run_compiled(run, variables, x)
  assert np.isfinite(float(loss))
  assert _logits(out).shape == (2, 10) and eval_logits.shape == (2, 10)  # eval mode: plain logits
  if getattr(model, "aux_logits", False):
    assert isinstance(out, dict) and all(a.shape == (2, 10) for a in out["aux_logits"])
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g))]
  assert not dead, f"parameters without gradient: {dead[:5]}"
  assert all(np.all(np.isfinite(np.asarray(g))) for _, g in flat)
  assert not np.allclose(np.asarray(after), np.asarray(eval_logits))  # the step changed what the model computes
  if "batch_stats" in variables:  # training moves the running statistics; evaluation only reads them
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), updates["batch_stats"], variables["batch_stats"])
    assert all(jax.tree.leaves(moved))
  else:
    assert updates == {} or not jax.tree.leaves(updates)


@pytest.mark.parametrize("name", NAMES)
def test_stage_features_and_summary(name):
  model, x = small_model(name), small_input(name)
  spec = jax.ShapeDtypeStruct(x.shape, jnp.float32)
  abstract = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x,
                                                 train=False), spec)
  stages = jax.eval_shape(lambda v, x: models.stage_features(model, v, x), abstract, spec)
  sizes = [s.shape[1] for s in stages]
  assert len(stages) >= 2 and all(s.ndim == 4 and s.shape[0] == 2 for s in stages)
  assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)  # one map per resolution
  overrides = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name in SMALL}
  stats = summary.model_stats(name, x.shape[1], 10, x.shape[3], **overrides)
  params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract["params"]))
  assert stats["params"] == params and stats["macs"] > 0 and stats["output_shape"] == (10,)
  assert stats["layers"] and stats["receptive_field"] > 1


def _arange_variables(name):
  """Every array filled with distinct values (a permutation or a transposition shows), at full size, cheaply."""
  abstract = layout.abstract_variables(models.create(name, num_classes=1000), train=True)
  counter = [0]

  def fill(leaf):
    values = (np.arange(leaf.size, dtype=np.float32) + counter[0]).reshape(leaf.shape)
    counter[0] += leaf.size
    return values

  return jax.tree.map(fill, abstract)


@pytest.mark.parametrize("name", [n for n in NAMES if models.info(n).torchvision_rules is not None])
def test_torchvision_mapping_round_trips(name):
  variables = _arange_variables(name)
  state_dict = convert.to_torchvision_layout(name, variables)
  assert {k: v.shape for k, v in state_dict.items()} == convert.expected_torchvision_shapes(name)
  back = convert.from_torchvision(name, state_dict)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(variables)
  # np.array_equal: exact, like assert_array_equal, which spends seconds per VGG on its NaN and inf bookkeeping
  same = jax.tree.map(lambda a, b: np.shape(a) == np.shape(b) and np.array_equal(a, b), back, variables)
  changed = [jax.tree_util.keystr(path) for path, ok in jax.tree_util.tree_leaves_with_path(same) if not ok]
  assert not changed, f"the round trip changed {changed}"


@pytest.mark.parametrize("name", [n for n in NAMES if models.info(n).keras is not None])
def test_keras_mapping_covers_every_module(name):
  mapping = models.info(name).keras
  model = models.create(name, num_classes=1000)
  leaves = layout.leaf_modules(layout.abstract_variables(model, train=False))
  layers = [layout.match(mapping.rules, path, "Keras")[0] for path, _, _ in leaves]
  assert len(set(layers)) == len(layers)  # one Keras layer per module (a BatchNorm is a layer of its own)
  assert mapping.head in layers
