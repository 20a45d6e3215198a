"""What a config builds, shared by training and evaluation: dataset, model, optimizer, state layout."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cnn_flax import models, optim, schema, steps
from cnn_flax.data import augment, datasets, pipeline, subset
from cnn_flax.errors import UserError


def resolve_dtype(name: str):
  """Compute dtype: "auto" is bfloat16 on GPU/TPU and float32 on CPU, where bf16 convolutions are slow."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


@dataclasses.dataclass(frozen=True)
class Experiment:
  dataset: datasets.Dataset
  dtype: Any
  steps_per_epoch: int
  total_steps: int
  schedule: optax.Schedule
  step_config: steps.StepConfig
  init_state: Callable[[jax.Array], steps.TrainState]  # rng -> fresh state
  host_augment: pipeline.HostAugment  # per-example augmentation on the host
  on_device: bool  # the training split lives on the accelerator; Grain feeds indices

  abstract_state: steps.TrainState  # shapes and dtypes of the state, without allocating it

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.dataset.image_shape


def _feed_on_device(config, dataset: datasets.Dataset, train_size: int, host_augment) -> bool:
  """Whether the training split should live on the accelerator (see `dataset.on_device` in cnn_flax/schema.py)."""
  if config.dataset.on_device != "auto":
    if config.dataset.on_device == "yes" and host_augment.policy != "none":
      raise UserError(f"config.dataset.on_device='yes' cannot apply the host augmentation "
                      f"{host_augment.policy!r}; use on_device='no' or augment.host='none'")
    return config.dataset.on_device == "yes"
  split_mb = train_size * int(np.prod(dataset.image_shape)) / 2**20
  return host_augment.policy == "none" and split_mb <= config.dataset.on_device_max_mb


def build(config: ml_collections.ConfigDict, mesh=None) -> Experiment:
  """Loads the dataset and builds model, schedule and optimizer for `config` (already validated).

  `mesh` is the training mesh; with `model.bn_sync=False` its devices normalise their shards separately.
  """
  info = models.info(config.model.name)
  image_size = config.dataset.image_size or info.input_size
  dataset = datasets.load(config.dataset.name, image_size, config.dataset.data_dir, channels=info.in_channels)
  dataset = subset.with_train_fraction(dataset, config.dataset.train_split, config.dataset.train_fraction)
  train_size = len(dataset.split(config.dataset.train_split))
  dataset.split(config.dataset.eval_split)  # fail now, not after training, if the eval split is missing
  microbatches = config.grad_accum_steps * jax.device_count()
  if config.batch_size % microbatches:
    raise UserError(f"config.batch_size={config.batch_size} does not split into {config.grad_accum_steps} "
                    f"microbatches over {jax.device_count()} devices; use a multiple of {microbatches}")
  steps_per_epoch = train_size // config.batch_size
  if steps_per_epoch == 0:
    raise UserError(f"config.batch_size={config.batch_size} exceeds the {train_size} training examples "
                    f"of {dataset.name!r}; use a smaller batch_size")
  total_steps = config.num_train_steps or max(1, int(round(config.num_epochs * steps_per_epoch)))
  dtype = resolve_dtype(config.dtype)
  extra = {}
  if config.remat:
    if "remat" not in {f.name for f in dataclasses.fields(models.create(config.model.name, num_classes=2))}:
      raise UserError(f"config.remat=True: {config.model.name!r} has no blocks to rematerialise; remat is for "
                      f"ResNet, DenseNet, GoogLeNet and MobileNet")
    extra["remat"] = True
  model = models.create(config.model.name, num_classes=dataset.num_classes, dtype=dtype,
                        **{**config.model.kwargs.to_dict(), **extra})
  schedule = optim.learning_rate_schedule(config, total_steps, steps_per_epoch)
  step_config = steps.StepConfig(
      model=model, tx=optim.make_optimizer(config, schedule), mean=dataset.mean, std=dataset.std,
      num_classes=dataset.num_classes, seed=config.seed, loss=schema.settings(steps.LossConfig, config),
      augment=schema.settings(augment.DeviceAugment, config.augment),
      update=steps.UpdateConfig(grad_accum_steps=config.grad_accum_steps, ema_decay=config.ema_decay,
                                grad_clip_norm=config.optimizer.grad_clip_norm),
      bn_mesh=None if config.model.bn_sync or mesh is None else mesh)
  host_augment = pipeline.HostAugment(config.augment.host, tuple(config.augment.area),
                                      tuple(config.augment.aspect), tuple(config.augment.scale))
  init_state = functools.partial(steps.init_state, step_config, dataset.image_shape)
  abstract_state = steps.state_shapes(init_state)
  unknown = sorted(set(config.freeze) - set(abstract_state.params))
  if unknown:
    raise UserError(f"config.freeze names {unknown}, which {config.model.name!r} does not have; its top-level "
                    f"parameter names are: {', '.join(abstract_state.params)}")
  return Experiment(dataset=dataset, dtype=dtype, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    schedule=schedule, step_config=step_config, host_augment=host_augment,
                    on_device=_feed_on_device(config, dataset, train_size, host_augment),
                    init_state=init_state, abstract_state=abstract_state)
