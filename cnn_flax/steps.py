"""Training state and the pure step functions; the trainer jits them with shardings.

`train_step(state, batch)` -> (state, metrics) and `eval_step(state, batch)` -> sums over the unmasked
examples. Both take uint8 image batches and normalise on the device. Nothing here touches the host.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from cnn_flax.data.augment import DeviceAugment


class TrainState(struct.PyTreeNode):
  """Everything that changes during training. `step` counts completed optimizer steps."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """How the loss is formed (top-level config fields of the same names)."""
  label_smoothing: float = 0.0
  aux_loss_weight: float = 0.3  # auxiliary classifiers (GoogLeNet); 0 leaves them out of the loss


@struct.dataclass
class StepConfig:
  """The static parts of a step: how to run the model, form the loss and augment (not part of the state).

  Options are grouped (`loss`, `augment`), so that a new option is a field of its group, not of this class.
  """
  model: nn.Module = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  mean: tuple = struct.field(pytree_node=False)
  std: tuple = struct.field(pytree_node=False)
  num_classes: int = struct.field(pytree_node=False)
  seed: int = struct.field(pytree_node=False, default=0)
  loss: LossConfig = struct.field(pytree_node=False, default=LossConfig())
  augment: DeviceAugment = struct.field(pytree_node=False, default=DeviceAugment())


def normalize(images: jax.Array, mean, std, dtype) -> jax.Array:
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def init_state(cfg: StepConfig, image_shape: tuple[int, int, int], rng: jax.Array) -> TrainState:
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  # train=True creates everything training uses (e.g. GoogLeNet's auxiliary heads).
  variables = cfg.model.init({"params": rng, "dropout": rng}, dummy, train=True)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=cfg.tx.init(params))


def _split_outputs(outputs) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """Models return logits, or in training a dict {"logits": ..., "aux_logits": (...)}."""
  if isinstance(outputs, dict):
    return outputs["logits"], tuple(outputs.get("aux_logits", ()))
  return outputs, ()


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy with integer labels (computed in float32 whatever the compute dtype)."""
  return soft_cross_entropy(logits, jax.nn.one_hot(labels, num_classes), smoothing)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array, smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy against target distributions (one-hot, or mixed by mixup/cutmix)."""
  if smoothing:
    targets = optax.smooth_labels(targets, smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def gather_batch(batch: dict[str, jax.Array], data: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """For the on-device feed: turns a batch of example indices into images and labels from `data`."""
  if "index" not in batch:
    return batch
  return {"image": jnp.take(data["image"], batch["index"], axis=0),
          "label": jnp.take(data["label"], batch["index"], axis=0)}


def _variables(state: TrainState, params) -> dict:
  return {"params": params, "batch_stats": state.batch_stats} if state.batch_stats else {"params": params}


def train_step(cfg: StepConfig, state: TrainState, batch: dict[str, jax.Array], data=None,
               dtype=jnp.float32) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step. `batch` holds uint8 images and labels, or indices into `data` (on-device feed)."""
  batch = gather_batch(batch, data)
  labels = batch["label"]
  # Keys derived from the seed and the step: a resumed run draws the same augmentations and dropout masks.
  keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), state.step), 4)
  images = normalize(cfg.augment.pixels(batch["image"], keys[0], keys[1]), cfg.mean, cfg.std, dtype)
  images, targets = cfg.augment.mix(images, jax.nn.one_hot(labels, cfg.num_classes), keys[2])

  def loss_fn(params):
    outputs, updates = cfg.model.apply(_variables(state, params), images, train=True,
                                       rngs={"dropout": keys[3]}, mutable=["batch_stats"])
    logits, aux_logits = _split_outputs(outputs)
    smoothing, aux_weight = cfg.loss.label_smoothing, cfg.loss.aux_loss_weight
    main_loss = soft_cross_entropy(logits, targets, smoothing).mean()
    loss = main_loss
    for aux in aux_logits if aux_weight else ():
      loss = loss + aux_weight * soft_cross_entropy(aux, targets, smoothing).mean()
    return loss, (main_loss, logits, updates)

  grads, (main_loss, logits, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
  param_updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, param_updates),
                            batch_stats=updates.get("batch_stats", state.batch_stats), opt_state=opt_state)
  metrics = {"loss": main_loss,
             # Against the unmixed labels: with mixup/cutmix this is only a rough guide.
             "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
             "grad_norm": optax.global_norm(grads)}
  return new_state, metrics


def ten_crop_views(images: jax.Array, size: int) -> jax.Array:
  """The 10-crop protocol (AlexNet, VGG, ResNet papers): 4 corners and centre, and their mirror images.

  (N, R, R, C) -> (10, N, size, size, C).
  """
  r = images.shape[1]
  corners = [(0, 0), (0, r - size), (r - size, 0), (r - size, r - size), ((r - size) // 2, (r - size) // 2)]
  views = [images[:, y:y + size, x:x + size] for y, x in corners]
  return jnp.stack(views + [v[:, :, ::-1] for v in views])


def eval_step(cfg: StepConfig, state: TrainState, batch: dict[str, jax.Array],
              dtype=jnp.float32, ten_crop: int = 0) -> dict[str, jax.Array]:
  """Sums of loss, top-1 and top-5 hits over the batch's real examples, plus each example's prediction.

  With `ten_crop` > 0 the batch holds larger images; each prediction averages the softmax of ten views of
  `ten_crop` pixels, and the loss is that of the averaged distribution.
  """
  images = normalize(batch["image"], cfg.mean, cfg.std, dtype)
  apply = lambda x: _split_outputs(cfg.model.apply(_variables(state, state.params), x, train=False))[0]
  if ten_crop:
    probs = jax.vmap(lambda v: jax.nn.softmax(apply(v).astype(jnp.float32)))(ten_crop_views(images, ten_crop))
    logits = jnp.log(jnp.maximum(probs.mean(0), 1e-30))  # log-probabilities: argmax and CE as usual
  else:
    logits = apply(images).astype(jnp.float32)
  labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
  k = min(5, cfg.num_classes)
  top_k = jax.lax.top_k(logits, k)[1]
  return {"loss_sum": jnp.sum(cross_entropy(logits, labels, cfg.num_classes) * mask),
          "correct_sum": jnp.sum((top_k[:, 0] == labels) * mask),
          "top5_sum": jnp.sum(jnp.any(top_k == labels[:, None], -1) * mask),
          "count": jnp.sum(mask),
          "prediction": jnp.argmax(logits, -1)}


def all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_jitted_steps(cfg: StepConfig, state_sharding, batch_sharding, replicated, dtype,
                      ten_crop: int = 0) -> tuple[Callable, Callable]:
  """The jitted train and eval steps: batch split over the mesh, state replicated and donated.

  The train step takes a third argument: the on-device training split ({} for the record feed).
  """
  train = jax.jit(lambda s, b, d: train_step(cfg, s, b, d, dtype),
                  in_shardings=(state_sharding, batch_sharding, replicated),
                  out_shardings=(state_sharding, replicated), donate_argnums=0)
  evaluate = jax.jit(lambda s, b: eval_step(cfg, s, b, dtype, ten_crop),
                     in_shardings=(state_sharding, batch_sharding),
                     out_shardings={"loss_sum": replicated, "correct_sum": replicated, "top5_sum": replicated,
                                    "count": replicated, "prediction": batch_sharding})
  return train, evaluate
