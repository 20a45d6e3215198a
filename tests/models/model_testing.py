"""Helpers shared by the model tests (tests/models/test_*.py): one copy of each, imported as
``from tests.models.model_testing import ...``.

The model tests must stay fast on a 2-core CPU, where XLA compilation, not arithmetic, is what costs time. So they
check counts and shapes by tracing only (``jax.eval_shape``), fill variables on the host instead of compiling
``model.init``, and compile what must really run as one program at a low optimisation level.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax.models.layers import LocalResponseNorm

# "rbg" keys: XLA's RngBitGenerator compiles several times faster than threefry on CPU (test-local choice).
RNGS = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}


def abstract_variables(model, size, train=False):
  """Shapes and dtypes of ``model``'s variables for one ``size`` x ``size`` RGB image, by tracing ``init`` (no
  compilation, no arrays): enough for parameter counts and structure checks even at 224 px."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(RNGS, x, train=train), x)


def abstract_eval_output(model, size, batch=2):
  """Shape and dtype of ``model``'s eval-mode output for ``batch`` float32 RGB images of ``size`` px, by tracing
  ``init`` then ``apply`` (no compilation): output shapes at many resolutions in milliseconds."""
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.apply(model.init(RNGS, x), x, train=False), x)


def lrn_calls(model, size):
  """Names of the LocalResponseNorm modules called (in call order) while tracing ``model``'s ``init`` at ``size``
  px: where a model normalises, seen without compiling it."""
  names = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, LocalResponseNorm):
      names.append(context.module.name)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    abstract_variables(model, size)
  return names


def count_params(tree):
  """Number of scalars in all leaves of ``tree`` (arrays or abstract shapes). Pass ``variables["params"]`` (or
  part of it) to leave out BatchNorm running statistics, which are not trainable and not in published counts."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def host_variables(model, x, train=False, seed=0, random_bn=False):
  """Variables with ``model``'s shapes for input ``x``, filled with numpy on the host.

  Compiling ``model.init`` costs seconds on this CPU (random number generation for every kernel); tests that run a
  model need working values, not the initialisers, so they trace ``init`` for the shapes and fill them here.

  ``random_bn=False``: BN scale/var 1, bias/mean 0 and LeCun-normal kernels: plain working values for
  forward/backward runs.
  ``random_bn=True``: BN scale/var ~ U(0.5, 1.5), bias/mean ~ N(0, 0.1) and He-normal kernels, for numeric checks
  against a reference implementation: with BN at its initial values (an identity in eval mode) a misplaced or
  missing normalisation would go unnoticed.
  """
  abstract = jax.eval_shape(lambda x: model.init(RNGS, x, train=train), x)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    fan_in = np.prod(leaf.shape[:-1])
    if not random_bn:
      if name in ("scale", "var"):
        return np.ones(leaf.shape, leaf.dtype)
      if name in ("bias", "mean"):
        return np.zeros(leaf.shape, leaf.dtype)
      return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
    if name in ("scale", "var"):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif name in ("bias", "mean"):
      value = rng.normal(0.0, 0.1, leaf.shape)
    else:  # kernels: He-normal scale keeps activations O(1) through ReLUs
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape)
    return np.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def run_compiled(f, *args):
  """jit-compiles ``f`` for ``args`` with ``xla_backend_optimization_level=0`` and runs it: the same results at
  about half the compile time on CPU, which dominates these tests."""
  return jax.jit(f).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)


def abstract_intermediates(model, size):
  """Output shapes of every submodule (eval mode) for one ``size`` x ``size`` RGB image, by tracing only."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = abstract_variables(model, size)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"]),
      variables, x)
  return state["intermediates"]


def out_shape(intermediates, *path):
  """The output shape of the submodule at ``path`` in ``abstract_intermediates``' tree (the model's with no path)."""
  node = intermediates
  for key in path:
    node = node[key]
  return tuple(node["__call__"][0].shape)


def batch_norm_settings(model, size, train):
  """(momentum, epsilon, use_running_average) of every BatchNorm call in one ``apply`` with ``train``, recorded
  with ``nn.intercept_methods`` while tracing (no compilation)."""
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      m = context.module
      seen.append((m.momentum, m.epsilon, m.use_running_average))
    return next_fun(*args, **kwargs)

  x = jnp.zeros((1, size, size, 3))
  variables = abstract_variables(model, size)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda v: model.apply(v, x, train=train, mutable=["batch_stats"]), variables)
  return seen


def train_and_eval(model, variables, x, target):
  """One program, compiled with ``run_compiled``: a training-mode forward+backward (dropout on, batch statistics
  updated) of ``mean(logsumexp(logits) - logits[:, target])``, the softmax cross-entropy with every image labelled
  ``target``, and an eval-mode forward of the same ``variables``.

  Returns ``(loss, grads, updates, eval_logits)``; ``updates`` holds the new ``batch_stats``.
  """

  def run(variables, x):
    def loss(params):
      logits, updates = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": jax.random.key(4, impl="rbg")})
      return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[:, target]), updates

    (value, updates), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    return value, grads, updates, model.apply(variables, x, train=False)

  return run_compiled(run, variables, x)


def cross_entropy_step(model, variables, x, labels):
  """One compiled training-mode forward+backward of a BatchNorm model under softmax cross-entropy on ``labels``.

  Returns ``((loss, updates), grads)``: ``updates`` holds the new ``batch_stats``, ``grads`` mirrors the params.
  """

  @jax.jit
  def step(params, batch_stats):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                    mutable=["batch_stats"])
      loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
      return loss, updates
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  return step(variables["params"], variables["batch_stats"])


def init_apply_dtypes(model, size, train):
  """The dtypes of ``model``'s variables and of its output for two ``size`` x ``size`` float32 RGB images, by
  tracing ``init`` then ``apply`` (no compilation): for checking that a bfloat16 compute ``dtype`` leaves the
  parameters in float32."""
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)

  def init_apply(x):
    variables = model.init(RNGS, x, train=train)
    return variables, model.apply(variables, x, train=train, rngs=RNGS, mutable=["batch_stats"])[0]

  variables, out = jax.eval_shape(init_apply, x)
  return {leaf.dtype for leaf in jax.tree.leaves(variables)}, {leaf.dtype for leaf in jax.tree.leaves(out)}
