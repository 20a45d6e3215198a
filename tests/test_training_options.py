"""Gradient clipping, weight averaging (EMA), gradient accumulation and per-device BatchNorm statistics."""
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from cnn_flax import experiment, models, optim, steps
from cnn_flax.data.augment import DeviceAugment
from tests.conftest import REPO_ROOT, make_tiny_config, read_metrics


def _step_config(model, **update):
  return steps.StepConfig(model=model, tx=optax.sgd(0.1), mean=(0.0,), std=(1.0,), num_classes=10,
                          augment=DeviceAugment(), update=steps.UpdateConfig(**update))


def _batch(n=8, size=32, channels=1, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.integers(0, 256, (n, size, size, channels)), jnp.uint8),
          "label": jnp.asarray(rng.integers(0, 10, n), jnp.int32)}


# --- clipping -------------------------------------------------------------------------------------------------
def test_clipping_scales_the_gradient_to_the_norm_before_weight_decay(tiny_config):
  tiny_config.optimizer.momentum, tiny_config.optimizer.weight_decay = 0.0, 0.1
  tiny_config.optimizer.grad_clip_norm = 0.5
  tx = optim.make_optimizer(tiny_config, lambda _: 1.0)
  params = {"kernel": jnp.ones((2, 2))}
  grads = {"kernel": jnp.full((2, 2), 3.0)}  # norm 6: scaled by 0.5 / 6
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -(3.0 * 0.5 / 6.0 + 0.1 * 1.0), rtol=1e-6)
  small = {"kernel": jnp.full((2, 2), 0.1)}  # norm 0.2: left alone
  updates, _ = tx.update(small, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -(0.1 + 0.1), rtol=1e-6)


def test_the_train_step_reports_when_it_clips():
  model = models.create("lenet5", num_classes=10)
  for clip, expected in ((1e-6, 1.0), (1e6, 0.0)):
    cfg = _step_config(model, grad_clip_norm=clip)
    state = steps.init_state(cfg, (32, 32, 1), jax.random.key(0))
    _, metrics = jax.jit(functools.partial(steps.train_step, cfg))(state, _batch())
    assert float(metrics["clipped"]) == expected
  _, metrics = jax.jit(functools.partial(steps.train_step, _step_config(model)))(state, _batch())
  assert "clipped" not in metrics  # off: not logged


# --- EMA --------------------------------------------------------------------------------------------------
def test_ema_averages_weights_and_batch_statistics():
  model = models.create("resnet20", num_classes=10, num_filters=4)
  cfg = _step_config(model, ema_decay=0.9)
  state = steps.init_state(cfg, (32, 32, 1), jax.random.key(0))
  assert isinstance(state, steps.EmaTrainState)
  jax.tree.map(np.testing.assert_array_equal, state.ema["params"], state.params)  # starts as a copy
  new, _ = jax.jit(functools.partial(steps.train_step, cfg))(state, _batch())
  expected = jax.tree.map(lambda old, fresh: 0.9 * old + 0.1 * fresh,
                          {"params": state.params, "batch_stats": state.batch_stats},
                          {"params": new.params, "batch_stats": new.batch_stats})
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), new.ema, expected)
  assert not np.allclose(new.ema["batch_stats"]["stem"]["bn"]["mean"], new.batch_stats["stem"]["bn"]["mean"])
  view = steps.ema_view(new)
  assert view.params is new.ema["params"] and view.batch_stats is new.ema["batch_stats"]
  assert type(steps.init_state(_step_config(model), (32, 32, 1), jax.random.key(0))) is steps.TrainState


def test_a_run_with_ema_evaluates_both_and_resumes_exactly(tmp_path):
  from cnn_flax import checkpoint, evaluator, trainer
  config = make_tiny_config()
  config.ema_decay = 0.5
  straight = trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  evals = [r for r in read_metrics(str(tmp_path / "straight")) if "eval/accuracy" in r]
  assert all({"eval/ema_accuracy", "eval/ema_top5_accuracy", "eval/ema_loss"} <= set(r) for r in evals)
  assert evals[-1]["eval/ema_loss"] != evals[-1]["eval/loss"]  # the average is another model
  assert straight["eval/ema_accuracy"] == evals[-1]["eval/ema_accuracy"]
  short = config.copy_and_resolve_references()
  short.num_train_steps = 6
  trainer.train_and_evaluate(short, str(tmp_path / "resumed"))
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert checkpoint.Checkpoints(str(tmp_path / "straight" / "checkpoints"), read_only=True).latest_step() == 12
  ema_of = lambda d: ocp.StandardCheckpointer().restore(str(tmp_path / d / "checkpoints" / "12" / "state"))["ema"]
  jax.tree.map(np.testing.assert_array_equal, ema_of("resumed"), ema_of("straight"))  # saved, resumed exactly
  figures = evaluator.evaluate_workdir(str(tmp_path / "straight"), ema=True)
  for key in ("accuracy", "top5_accuracy", "loss"):
    assert figures[f"eval/{key}"] == evals[-1][f"eval/ema_{key}"]


# --- gradient accumulation -------------------------------------------------------------------------------
def test_accumulation_without_batchnorm_equals_the_whole_batch():
  model = models.create("lenet5", num_classes=10)
  whole, accumulated = _step_config(model), _step_config(model, grad_accum_steps=4)
  state = steps.init_state(whole, (32, 32, 1), jax.random.key(0))
  batch = _batch(16)
  a, metrics_a = jax.jit(functools.partial(steps.train_step, whole))(state, batch)
  b, metrics_b = jax.jit(functools.partial(steps.train_step, accumulated))(state, batch)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a.params, b.params)
  for key in ("loss", "accuracy", "grad_norm"):
    np.testing.assert_allclose(metrics_a[key], metrics_b[key], rtol=1e-5)


def test_accumulation_updates_batchnorm_once_per_microbatch():
  model = models.create("resnet20", num_classes=10, num_filters=4)
  cfg = _step_config(model, grad_accum_steps=2)
  state = steps.init_state(cfg, (32, 32, 1), jax.random.key(0))
  batch = _batch(8)
  new, _ = jax.jit(functools.partial(steps.train_step, cfg))(state, batch)
  images = steps.normalize(batch["image"], (0.0,), (1.0,), jnp.float32)
  stats = state.batch_stats
  for j in range(2):  # microbatch j holds examples j, j + 2, ...
    _, updates = model.apply({"params": state.params, "batch_stats": stats}, images[j::2], train=True,
                             mutable=["batch_stats"])
    stats = updates["batch_stats"]
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), new.batch_stats, stats)


def test_a_batch_that_does_not_split_into_microbatches_is_a_user_error(tiny_config):
  from cnn_flax.errors import UserError
  tiny_config.grad_accum_steps = 5
  with pytest.raises(UserError, match=r"batch_size=32 does not split into 5 microbatches"):
    experiment.build(tiny_config)


def _one_step_agrees(cfg, other):
  """One train step of each config from the same initial state: the new parameters and BatchNorm statistics agree.
  Returns both steps' metrics."""
  state = steps.init_state(cfg, (32, 32, 1), jax.random.key(0))
  a, ma = jax.jit(functools.partial(steps.train_step, cfg))(state, _batch())
  b, mb = jax.jit(functools.partial(steps.train_step, other))(state, _batch())
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), (a.params, a.batch_stats),
               (b.params, b.batch_stats))
  return ma, mb


# --- per-device BatchNorm --------------------------------------------------------------------------------
def test_per_device_statistics_on_one_device_equal_global_ones(tiny_config, monkeypatch):
  from cnn_flax import parallel
  # The shard_map body computes Flax's BatchNorm; so does the global step here, so that what is compared is the
  # statistics' scope and not two ways of summing. (On these unnormalised 0-255 images Flax's one-pass variance,
  # E[x^2] - E[x]^2, moves the stem's kernel gradient by 1e-3 against a float64 step; oneDNN's by 6e-6.)
  monkeypatch.setenv("CNN_FLAX_ONEDNN_BATCHNORM", "0")
  model = models.create("resnet20", num_classes=10, num_filters=4)
  mesh = parallel.make_mesh()
  plain = _step_config(model)
  local = plain.replace(bn_mesh=mesh)
  ma, mb = _one_step_agrees(plain, local)
  np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-6)


FOUR_DEVICES = """
import functools, json, jax, jax.numpy as jnp, numpy as np, optax
from cnn_flax import models, parallel, steps
from cnn_flax.data.augment import DeviceAugment
model = models.create("resnet20", num_classes=10, num_filters=4)
mesh = parallel.make_mesh()
assert mesh.size == 4
cfg = steps.StepConfig(model=model, tx=optax.sgd(0.1), mean=(0.0,), std=(1.0,), num_classes=10, bn_mesh=mesh)
state = steps.init_state(cfg, (32, 32, 1), jax.random.key(0))
images = jnp.asarray(np.random.default_rng(0).standard_normal((8, 32, 32, 1)), jnp.float32)
variables = {"params": state.params, "batch_stats": state.batch_stats}
sharded = jax.device_put(images, parallel.batch_sharded(mesh))
(logits, updates) = jax.jit(lambda v, x: steps._apply_per_device(cfg, v, x, jax.random.key(1)))(variables, sharded)
parts = [model.apply(variables, images[2 * i:2 * i + 2], train=True, mutable=["batch_stats"]) for i in range(4)]
whole = model.apply(variables, images, train=True, mutable=["batch_stats"])[0]
mean_stats = jax.tree.map(lambda *xs: sum(xs) / 4, *[p[1]["batch_stats"] for p in parts])
print(json.dumps({
    "per_device_vs_quarters": float(jnp.abs(logits - jnp.concatenate([p[0] for p in parts])).max()),
    "per_device_vs_global": float(jnp.abs(logits - whole).max()),
    "stats_vs_mean": max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(updates["batch_stats"]),
                                                                       jax.tree.leaves(mean_stats)))}))
"""


def test_on_four_devices_each_normalises_its_own_quarter():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO_ROOT}
  result = subprocess.run([sys.executable, "-c", FOUR_DEVICES], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  diffs = json.loads(result.stdout.strip().splitlines()[-1])
  assert diffs["per_device_vs_quarters"] < 1e-5  # exactly what each device would compute alone
  assert diffs["per_device_vs_global"] > 1e-2  # and not what global statistics give
  assert diffs["stats_vs_mean"] < 1e-6  # running averages: the mean over devices


# --- rematerialisation and profiling ------------------------------------------------------------------------
@pytest.mark.parametrize("name, overrides", [("resnet20", {"num_filters": 4}),
                                             ("densenet_bc_100", {"block_sizes": (2, 2, 2), "growth_rate": 4})])
def test_rematerialised_blocks_compute_the_same_step(name, overrides):
  plain = _step_config(models.create(name, num_classes=10, **overrides))
  remat = _step_config(models.create(name, num_classes=10, remat=True, **overrides))
  ma, mb = _one_step_agrees(plain, remat)
  np.testing.assert_allclose(ma["grad_norm"], mb["grad_norm"], rtol=1e-5)
  state = steps.init_state(plain, (32, 32, 1), jax.random.key(0))
  jaxpr = str(jax.make_jaxpr(functools.partial(steps.train_step, remat))(state, _batch()))
  assert "remat" in jaxpr or "checkpoint" in jaxpr  # the blocks really are rematerialised


def test_remat_on_a_model_without_blocks_is_a_user_error(tiny_config):
  from cnn_flax.errors import UserError
  tiny_config.remat = True
  with pytest.raises(UserError, match="'lenet5' has no blocks to rematerialise"):
    experiment.build(tiny_config)


def test_profile_steps_write_a_trace(tiny_config, tmp_path):
  from cnn_flax import trainer
  tiny_config.profile_steps = (2, 3)
  trainer.train_and_evaluate(tiny_config, str(tmp_path))
  traces = [f for root, _, files in os.walk(tmp_path / "plugins" / "profile") for f in files]
  assert any(f.endswith(".xplane.pb") for f in traces) and any(f.endswith(".trace.json.gz") for f in traces)
