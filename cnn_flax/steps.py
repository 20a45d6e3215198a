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

from cnn_flax import gcpause
from cnn_flax.data.augment import DeviceAugment


class TrainState(struct.PyTreeNode):
  """Everything that changes during training. `step` counts completed optimizer steps."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


class EmaTrainState(TrainState):
  """TrainState plus an exponential moving average of the weights (`config.ema_decay` > 0).

  `ema` holds {"params", "batch_stats"}: as timm's ModelEmaV2 averages every entry of the model's state dict, the
  BatchNorm running statistics are averaged with the same decay as the weights, so the EMA model is evaluated with
  statistics that match its weights. A separate class, so that checkpoints of runs without EMA keep their layout.
  """
  ema: Any


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
  """How gradients become the new state: accumulation, clipping (its metric), weight averaging."""
  grad_accum_steps: int = 1  # microbatches per optimizer step (config.grad_accum_steps)
  grad_clip_norm: float = 0.0  # the optimizer clips (optim.make_optimizer); here only for the `clipped` metric
  ema_decay: float = 0.0  # 0 = no weight averaging


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
  update: UpdateConfig = struct.field(pytree_node=False, default=UpdateConfig())
  # Per-device BatchNorm statistics (config.model.bn_sync=False): the mesh whose devices each normalise their own
  # shard; None = statistics of the global batch.
  bn_mesh: Any = struct.field(pytree_node=False, default=None)


def normalize(images: jax.Array, mean, std, dtype) -> jax.Array:
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def init_state(cfg: StepConfig, image_shape: tuple[int, int, int], rng: jax.Array) -> TrainState:
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  # train=True creates everything training uses (e.g. GoogLeNet's auxiliary heads).
  variables = cfg.model.init({"params": rng, "dropout": rng}, dummy, train=True)
  params = variables["params"]
  fields = dict(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                opt_state=cfg.tx.init(params))
  if cfg.update.ema_decay:  # the average starts as a copy of the initial weights, as timm's does
    return EmaTrainState(**fields, ema={"params": params, "batch_stats": fields["batch_stats"]})
  return TrainState(**fields)


# The initialisation's compile is mostly its initialisers' random numbers (DenseNet-BC-100: 49,000 HLO lines, 15.5 s
# cold on a 2-core CPU). LLVM at -O1 compiles it in about half the time and, in every model we compared, to the same
# bits (benchmarks/README.md, `:digits` presets); -O0 changed them. It runs once per start: speed does not matter.
_INIT_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 1}}


def state_shapes(init: Callable[[jax.Array], TrainState]) -> TrainState:
  """The state's shapes and dtypes, without allocating it.

  This is where the model is traced (`jax.eval_shape` is `jit(init).trace`; `initialise` reuses the trace), so
  Python's cyclic garbage collector is paused here too (cnn_flax/gcpause.py).
  """
  with gcpause.paused():
    return jax.eval_shape(init, jax.random.key(0))


def initialise(init: Callable[[jax.Array], TrainState], state_sharding, rng: jax.Array) -> TrainState:
  """`jax.jit(init, out_shardings=state_sharding)(rng)`, compiled for a short compile rather than a fast run."""
  with gcpause.paused():  # tracing and compiling (cnn_flax/gcpause.py)
    lowered = jax.jit(init, out_shardings=state_sharding).lower(rng)
    return lowered.compile(compiler_options=_INIT_COMPILER_OPTIONS.get(jax.default_backend()))(rng)


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


def _apply_per_device(cfg: StepConfig, variables, images: jax.Array, rng: jax.Array):
  """The training forward pass with each device normalising its shard by its own BatchNorm statistics.

  Under shard_map every device runs the model on its slice of the batch, so BatchNorm computes local statistics:
  no all-reduce per BatchNorm layer. The running averages are then averaged over the devices (one all-reduce per
  step, as timm's distribute_bn 'reduce'); gradients reach the replicated weights through shard_map's transpose.
  """
  from jax.sharding import PartitionSpec as P
  mesh = cfg.bn_mesh
  devices = mesh.shape["data"]

  def local(variables, images, rng):
    if devices > 1:  # independent dropout masks per device
      rng = jax.random.fold_in(rng, jax.lax.axis_index("data"))
    outputs, updates = cfg.model.apply(variables, images, train=True, rngs={"dropout": rng},
                                       mutable=["batch_stats"])
    return outputs, jax.lax.pmean(updates, "data")

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data"), P()), out_specs=(P("data"), P()))(
      variables, images, rng)


def _loss_and_grads(cfg: StepConfig, state: TrainState, images, targets, rng):
  """Gradients of the loss on one (micro)batch: (grads, (main loss, logits, batch_stats updates))."""

  def loss_fn(params):
    variables = _variables(state, params)
    if cfg.bn_mesh is not None:
      outputs, updates = _apply_per_device(cfg, variables, images, rng)
    else:
      outputs, updates = cfg.model.apply(variables, images, train=True, rngs={"dropout": rng},
                                         mutable=["batch_stats"])
    logits, aux_logits = _split_outputs(outputs)
    smoothing, aux_weight = cfg.loss.label_smoothing, cfg.loss.aux_loss_weight
    main_loss = soft_cross_entropy(logits, targets, smoothing).mean()
    loss = main_loss
    for aux in aux_logits if aux_weight else ():
      loss = loss + aux_weight * soft_cross_entropy(aux, targets, smoothing).mean()
    return loss, (main_loss, logits, updates)

  return jax.grad(loss_fn, has_aux=True)(state.params)


def _accumulated(cfg: StepConfig, state: TrainState, images, targets, rng):
  """Mean gradients over `grad_accum_steps` microbatches, each a forward and backward pass of its own.

  Microbatch j takes examples j, j + k, j + 2k, ...: with the batch sharded over devices, every device keeps an
  equal part of every microbatch (no data moves). BatchNorm normalises each microbatch with its own statistics and
  updates its running averages once per microbatch, as it would on a device that holds only a microbatch.
  """
  k = cfg.update.grad_accum_steps
  split = lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
  micro_images, micro_targets = split(images), split(targets)

  def body(carry, xs):
    grads_sum, batch_stats = carry
    j, micro_x, micro_y = xs
    grads, (main_loss, logits, updates) = _loss_and_grads(cfg, state.replace(batch_stats=batch_stats), micro_x,
                                                          micro_y, jax.random.fold_in(rng, j))
    carry = (jax.tree.map(jnp.add, grads_sum, grads), updates.get("batch_stats", batch_stats))
    return carry, (main_loss, logits)

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  (grads, batch_stats), (losses, logits) = jax.lax.scan(body, (zeros, state.batch_stats),
                                                        (jnp.arange(k), micro_images, micro_targets))
  logits = logits.swapaxes(0, 1).reshape(-1, logits.shape[-1])  # back to the batch's example order
  return jax.tree.map(lambda g: g / k, grads), (losses.mean(), logits, {"batch_stats": batch_stats})


def train_step(cfg: StepConfig, state: TrainState, batch: dict[str, jax.Array], data=None,
               dtype=jnp.float32) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step. `batch` holds uint8 images and labels, or indices into `data` (on-device feed)."""
  batch = gather_batch(batch, data)
  labels = batch["label"]
  # Keys derived from the seed and the step: a resumed run draws the same augmentations and dropout masks.
  keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), state.step), 4)
  images = normalize(cfg.augment.pixels(batch["image"], keys[0], keys[1]), cfg.mean, cfg.std, dtype)
  images, targets = cfg.augment.mix(images, jax.nn.one_hot(labels, cfg.num_classes), keys[2])

  if cfg.update.grad_accum_steps > 1:
    grads, (main_loss, logits, updates) = _accumulated(cfg, state, images, targets, keys[3])
  else:
    grads, (main_loss, logits, updates) = _loss_and_grads(cfg, state, images, targets, keys[3])
  param_updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, param_updates)
  batch_stats = updates.get("batch_stats", state.batch_stats)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
  if cfg.update.ema_decay:
    decay = cfg.update.ema_decay
    average = lambda ema, new: decay * ema + (1.0 - decay) * new
    new_state = new_state.replace(ema=jax.tree.map(average, state.ema,
                                                   {"params": params, "batch_stats": batch_stats}))
  grad_norm = optax.global_norm(grads)
  metrics = {"loss": main_loss,
             # Against the unmixed labels: with mixup/cutmix this is only a rough guide.
             "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
             "grad_norm": grad_norm}
  if cfg.update.grad_clip_norm:  # the share of steps whose gradients were clipped (logged as a mean)
    metrics["clipped"] = (grad_norm > cfg.update.grad_clip_norm).astype(jnp.float32)
  return new_state, metrics


def ema_view(state: TrainState) -> TrainState:
  """The state with the averaged weights and statistics in place of the trained ones (for evaluation, export)."""
  return state.replace(params=state.ema["params"], batch_stats=state.ema["batch_stats"])


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

  The train step takes a third argument: the on-device training split ({} for the record feed). Each step's first
  call, which traces and compiles it, runs with Python's cyclic garbage collector paused (cnn_flax/gcpause.py).
  """
  train = jax.jit(lambda s, b, d: train_step(cfg, s, b, d, dtype),
                  in_shardings=(state_sharding, batch_sharding, replicated),
                  out_shardings=(state_sharding, replicated), donate_argnums=0)
  evaluate = jax.jit(lambda s, b: eval_step(cfg, s, b, dtype, ten_crop),
                     in_shardings=(state_sharding, batch_sharding),
                     out_shardings={"loss_sum": replicated, "correct_sum": replicated, "top5_sum": replicated,
                                    "count": replicated, "prediction": batch_sharding})
  return gcpause.FirstCallPaused(train), gcpause.FirstCallPaused(evaluate)
