"""`batchnorm.BatchNorm` is Flax's BatchNorm (then a ReLU): the same variables, outputs, running averages and
gradients, whether oneDNN computes its training pass or Flax does, and oneDNN only where it applies."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.models import fastconv, onednn
from cnn_flax.models.batchnorm import BatchNorm


def assert_close(actual, desired, rtol):
  """Each array within `rtol` of its own largest magnitude: sums over many elements (a scale's gradient, a
  running variance) differ in their last bits with the order of summation, whatever their own size."""
  def check(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b), initial=0) <= rtol * max(np.max(np.abs(b), initial=0), 1e-6), (a, b)
  jax.tree.map(check, actual, desired)


def needs_onednn():
  if not onednn.available():
    pytest.skip("oneDNN is not available here")


def training_step(module, x, relu_after: bool = False):
  """(variables at init, jaxpr text, (output, updated batch_stats, gradients of params and input)) of a
  training-mode apply, the loss a sum of sines so that every output element has its own cotangent."""
  variables = module.init(jax.random.key(0), x)

  def loss(params, x):
    y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              mutable=["batch_stats"])
    y = nn.relu(y) if relu_after else y
    return jnp.sum(jnp.sin(3 * y)), (y, updates["batch_stats"])

  step = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  text = str(jax.make_jaxpr(step)(variables["params"], x))
  (_, (y, stats)), grads = jax.jit(step)(variables["params"], x)
  return variables, text, (y, stats, grads)


@pytest.mark.parametrize("shape, relu, epsilon", [
    ((4, 5, 6, 8), True, 1e-5),  # an NHWC map, BatchNorm then ReLU (ConvBN, DenseNet, VGG)
    ((4, 5, 6, 8), False, 1e-3),  # before a residual sum; googlenet_bn's epsilon
    ((3, 7, 7, 16), True, 1e-5),  # channels in oneDNN's blocks of 16
    ((6, 24), True, 1e-5),  # a dense layer's (batch, features)
])
def test_onednn_computes_what_flax_computes(shape, relu, epsilon):
  needs_onednn()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape) * 2 + 1, jnp.float32)
  channels = shape[-1]
  inits = dict(scale_init=lambda k, s, d: jnp.linspace(0.5, 1.5, s[0], dtype=d),
               bias_init=lambda k, s, d: jnp.linspace(-0.5, 0.5, s[0], dtype=d))
  settings = dict(use_running_average=False, momentum=0.8, epsilon=epsilon, **inits)
  ours = training_step(BatchNorm(relu=relu, **settings), x)
  flax = training_step(nn.BatchNorm(**settings), x, relu_after=relu)
  assert "CnnFlaxBatchNormForward" in ours[1] and "CnnFlaxBatchNormBackward" in ours[1]
  assert "CnnFlax" not in flax[1]
  # Variables: the same names, shapes, dtypes and starting values (init leaves the running averages alone).
  assert jax.tree.map(lambda a: (a.shape, a.dtype), ours[0]) == jax.tree.map(lambda a: (a.shape, a.dtype), flax[0])
  jax.tree.map(np.testing.assert_array_equal, ours[0], flax[0])
  assert ours[0]["params"]["scale"].shape == (channels,)
  # Output, running averages (biased variance, momentum 0.8) and the gradients of scale, bias and input.
  assert_close(ours[2], flax[2], rtol=1e-5)
  assert not np.allclose(ours[2][1]["var"], 1.0)  # the update happened


def test_evaluation_and_other_cases_stay_flax(monkeypatch):
  needs_onednn()
  x = jnp.ones((2, 4, 4, 8))
  variables = BatchNorm(use_running_average=False).init(jax.random.key(0), x)  # for shard_map's body below

  def traced(module, x, **kwargs):  # a new function each time: the choice is made while tracing
    variables = module.init(jax.random.key(0), x, **kwargs)
    return str(jax.make_jaxpr(lambda v, x: module.apply(v, x, mutable=["batch_stats"], **kwargs))(variables, x))

  assert "CnnFlaxBatchNorm" in traced(BatchNorm(use_running_average=False), x)
  assert "CnnFlaxBatchNorm" in traced(BatchNorm(), x, use_running_average=False)  # the call's flag counts
  assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=True), x)  # running averages: XLA fuses
  assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=False), x.astype(jnp.bfloat16))
  assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=False, dtype=jnp.bfloat16), x)
  assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=False, axis=1), jnp.ones((2, 8, 4, 4)))
  assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=False, use_bias=False), x)
  # oneDNN's generic loops (no generated kernel for 12 channels on x86) are slower than XLA: Flax's it is.
  assert not onednn.batch_norm_has_kernels(2 * 4 * 4, 12)
  assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=False), jnp.ones((2, 4, 4, 12)))
  with fastconv.plain():
    assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=False), x)
  inside_shard_map = jax.shard_map(
      lambda x: BatchNorm(use_running_average=False).apply(variables, x, mutable=["batch_stats"])[0],
      mesh=jax.make_mesh((1,), ("data",)), in_specs=jax.P(), out_specs=jax.P())
  assert "CnnFlaxBatchNorm" not in str(jax.make_jaxpr(inside_shard_map)(x))  # per-device BatchNorm's body
  monkeypatch.setattr(jax, "device_count", lambda: 2)  # a mesh: the custom call has no sharding rule
  assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=False), x)
  monkeypatch.undo()
  monkeypatch.setenv("CNN_FLAX_ONEDNN_BATCHNORM", "0")  # this path alone
  assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=False), x)
  monkeypatch.undo()
  monkeypatch.setenv("CNN_FLAX_ONEDNN", "0")  # with oneDNN's convolutions
  assert "CnnFlaxBatchNorm" not in traced(BatchNorm(use_running_average=False), x)


def test_flax_path_applies_the_relu_and_counts_as_one_call():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)), jnp.float32)
  module = BatchNorm(use_running_average=True, relu=True)
  variables = module.init(jax.random.key(0), x)
  np.testing.assert_allclose(module.apply(variables, x), nn.relu(x / np.sqrt(1 + 1e-5)), rtol=1e-6)
  calls = []

  def record(next_fun, args, kwargs, context):
    calls.append((type(context.module).__name__, context.method_name))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):  # the layer summary counts module calls this way
    module.apply(variables, x)
  assert calls == [("BatchNorm", "__call__")]


def test_the_relu_mask_size_comes_from_onednn():
  needs_onednn()
  sizes = {(rows, channels): onednn.relu_mask_bytes(rows, channels) for rows, channels in [(8, 16), (800, 64)]}
  assert sizes[(800, 64)] >= 800 * 64 // 8  # a bit per element at least
  assert sizes[(800, 64)] > sizes[(8, 16)]


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_a_training_step_is_the_same_in_onednn_as_in_xla(monkeypatch, name):
  """Whole networks, convolutions and BatchNorms in oneDNN against every one in XLA: loss, gradients and running
  averages of one training step: ConvBN with and without its ReLU (before the residual sum), DenseNet's BatchNorm
  and ReLU before each convolution. At 64 px the last maps are 2x2: statistics over 16 values, not over the 4
  values of a 1x1 map, where normalising magnifies the last bits of any sum."""
  needs_onednn()
  from tests.test_models import small_model

  model = small_model(name)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 64, 64, 3)), jnp.float32)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)

  def loss(params):
    logits, updates = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                                  rngs={"dropout": jax.random.key(1)})
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[:, 0]), updates["batch_stats"]

  def step():  # traced anew for each path: the choice is made while tracing
    text = str(jax.make_jaxpr(lambda p: jax.value_and_grad(loss, has_aux=True)(p))(variables["params"]))
    return text, jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

  fast_text, fast = step()
  monkeypatch.setenv("CNN_FLAX_ONEDNN", "0")
  plain_text, plain = step()
  assert "CnnFlaxBatchNormForward" in fast_text and "CnnFlaxBatchNorm" not in plain_text
  (fast_loss, fast_stats), fast_grads = fast
  (plain_loss, plain_stats), plain_grads = plain
  assert_close((fast_loss, fast_stats), (plain_loss, plain_stats), rtol=1e-4)
  # Gradients leaf by leaf, judged by the many and not the worst: a few are ill-conditioned in float32 (DenseNet's
  # stem BatchNorm scale moves 4% between oneDNN's and XLA's convolutions alone, and up to 11% with BatchNorm's
  # statistics summed in another order, where 2x2 maps leave some channels almost constant), and a
  # pre-activation within rounding of zero can fall on either side of the ReLU's kink. A mistake in the wiring
  # (a missing ReLU, other statistics, a wrong input gradient) moves every leaf before it, the median with them.
  def relative_error(a, b):
    return float(np.linalg.norm(np.ravel(a - b)) / max(np.linalg.norm(np.ravel(b)), 1e-12))
  errors = jax.tree.leaves(jax.tree.map(relative_error, fast_grads, plain_grads))
  assert np.median(errors) < 1e-4, sorted(errors)
