"""The pure train and eval steps."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_flax import experiment, parallel, steps


@pytest.fixture(scope="module")
def lenet_setup():
  from configs import lenet5
  config = lenet5.get_config()
  config.batch_size = 64
  config.augment.crop_padding = 0  # a fixed batch, so that the loss measures fitting alone
  exp = experiment.build(config)
  train = exp.dataset.splits["train"]
  batch = {"image": jnp.asarray(train.images[:64]), "label": jnp.asarray(train.labels[:64])}
  return exp, batch


def test_a_few_train_steps_reduce_the_loss(lenet_setup):
  exp, batch = lenet_setup
  state = exp.init_state(jax.random.key(0))
  step = jax.jit(functools.partial(steps.train_step, exp.step_config))
  losses = []
  for _ in range(20):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 20
  assert losses[-1] < 0.5 * losses[0], losses


def test_eval_step_sums_only_unmasked_examples(lenet_setup):
  exp, batch = lenet_setup
  state = exp.init_state(jax.random.key(0))
  mask = np.arange(64) < 50
  out = jax.jit(functools.partial(steps.eval_step, exp.step_config))(state, {**batch, "mask": jnp.asarray(mask)})
  images = steps.normalize(batch["image"], exp.dataset.mean, exp.dataset.std, jnp.float32)
  logits = np.asarray(exp.step_config.model.apply({"params": state.params}, images, train=False))
  labels = np.asarray(batch["label"])
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  assert float(out["count"]) == 50
  np.testing.assert_allclose(float(out["loss_sum"]), losses[mask].sum(), rtol=1e-5)
  assert float(out["correct_sum"]) == (logits.argmax(-1) == labels)[mask].sum()
  top5 = np.argsort(-logits, -1)[:, :5]
  assert float(out["top5_sum"]) == (top5 == labels[:, None]).any(-1)[mask].sum()


class _AuxModel(nn.Module):
  """A model that returns auxiliary logits in training, like GoogLeNet."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    logits = nn.Dense(self.num_classes)(x)
    if train:
      return {"logits": logits, "aux_logits": (nn.Dense(self.num_classes, name="aux")(x),)}
    return logits


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


@pytest.mark.parametrize("aux_weight, smoothing", [(0.0, 0.0), (0.3, 0.0), (0.3, 0.2)])
def test_train_loss_is_main_plus_weighted_auxiliary_cross_entropy_and_metrics_report_the_main_one(aux_weight,
                                                                                                   smoothing):
  lr = 0.5
  cfg = steps.StepConfig(model=_AuxModel(), tx=optax.sgd(lr), mean=(0.0,), std=(1.0,), num_classes=3,
                         loss=steps.LossConfig(aux_loss_weight=aux_weight, label_smoothing=smoothing))
  state = steps.init_state(cfg, (2, 2, 1), jax.random.key(0))
  batch = {"image": jnp.arange(8, dtype=jnp.uint8).reshape(2, 2, 2, 1), "label": jnp.array([0, 2])}
  new_state, metrics = jax.jit(functools.partial(steps.train_step, cfg))(state, batch)

  # By hand, in float64: both heads are dense layers on the flattened pixels (mean 0, std 1: no normalisation).
  x = np.arange(8, dtype=np.float64).reshape(2, 4)
  targets = (1 - smoothing) * np.eye(3)[[0, 2]] + smoothing / 3
  heads = {"Dense_0": 1.0, "aux": aux_weight}  # the weight of each head's cross-entropy in the loss
  probs, ce = {}, {}
  for head in heads:
    p = {k: np.asarray(v, np.float64) for k, v in state.params[head].items()}
    probs[head] = _softmax(x @ p["kernel"] + p["bias"])
    ce[head] = float(np.mean(-(targets * np.log(probs[head])).sum(-1)))
  # SGD without momentum: new = old - lr * d(loss)/d(param), and d(w * mean CE)/d(logits) = w * (p - t) / N.
  for head, weight in heads.items():
    d_logits = weight * (probs[head] - targets) / 2
    np.testing.assert_allclose(new_state.params[head]["kernel"], state.params[head]["kernel"] - lr * x.T @ d_logits,
                               rtol=1e-5, atol=1e-6, err_msg=head)
    np.testing.assert_allclose(new_state.params[head]["bias"], state.params[head]["bias"] - lr * d_logits.sum(0),
                               rtol=1e-5, atol=1e-6, err_msg=head)
  if aux_weight == 0:  # left out of the loss entirely: not even a zero-weighted gradient
    np.testing.assert_array_equal(new_state.params["aux"]["kernel"], state.params["aux"]["kernel"])
  # The reported loss is the main head's alone, whatever the auxiliary weight.
  assert float(metrics["loss"]) == pytest.approx(ce["Dense_0"], rel=1e-5)
  assert float(metrics["accuracy"]) == np.mean(probs["Dense_0"].argmax(-1) == [0, 2])


def test_jitted_steps_run_on_the_mesh(lenet_setup):
  exp, batch = lenet_setup
  mesh = parallel.make_mesh()
  rep, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  abstract = exp.abstract_state
  state_sharding = jax.tree.map(lambda _: rep, abstract)
  state = jax.jit(exp.init_state, out_shardings=state_sharding)(jax.random.key(0))
  train, _ = steps.make_jitted_steps(exp.step_config, state_sharding, sharded, rep, jnp.float32)
  new_state, metrics = train(state, batch, {})
  assert int(new_state.step) == 1 and np.isfinite(float(metrics["loss"]))
  assert state.step.is_deleted()  # the old state was donated


def test_label_smoothing_mixes_the_target_with_a_uniform_distribution():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  log_p = jax.nn.log_softmax(logits)[0]
  smoothed = float(steps.cross_entropy(logits, jnp.array([0]), 3, smoothing=0.3)[0])
  expected = -(0.7 + 0.1) * log_p[0] - 0.1 * log_p[1] - 0.1 * log_p[2]
  assert smoothed == pytest.approx(float(expected), rel=1e-6)
  assert float(steps.cross_entropy(logits, jnp.array([0]), 3)[0]) == pytest.approx(float(-log_p[0]), rel=1e-6)


@pytest.mark.parametrize("model_name, size, kwargs", [
    ("lenet5", 32, {}),
    ("resnet20", 32, {}),  # He-normal convolutions, BatchNorm
    ("mobilenet_v1", 32, {"width_multiplier": 0.25}),  # depthwise kernels
    ("densenet40", 32, {}),  # many small layers: the case the option is for
    ("googlenet_bn", 64, {}),  # truncated-normal initialisers, auxiliary heads
])
def test_the_quickly_compiled_initialisation_gives_the_same_bits(model_name, size, kwargs):
  from cnn_flax import models, optim, schema
  model = models.create(model_name, num_classes=10, **kwargs)
  tx = optim.make_optimizer(schema.base_config(), lambda _: 0.01)
  cfg = steps.StepConfig(model=model, tx=tx, mean=(0.0,) * 3, std=(1.0,) * 3, num_classes=10)
  init = functools.partial(steps.init_state, cfg, (size, size, 3))
  sharding = jax.tree.map(lambda _: parallel.replicated(parallel.make_mesh()), jax.eval_shape(init, jax.random.key(0)))
  plain = jax.jit(init, out_shardings=sharding)(jax.random.key(3))
  quick = steps.initialise(init, sharding, jax.random.key(3))
  assert jax.tree.structure(plain) == jax.tree.structure(quick)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(quick), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
