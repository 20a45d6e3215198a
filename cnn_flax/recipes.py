"""Helpers the recipes in configs/ share: presets, the bundled-digits variant of a paper recipe, ImageNet defaults.

A recipe is any Python file with `get_config(preset="")` returning a config built from `schema.base_config()`; it
may live anywhere (a copy of configs/lenet5.py in your own project works the same), since it imports only
`cnn_flax`.
"""
from __future__ import annotations

import ml_collections

DIGITS_TRAIN_EXAMPLES = 1442  # the bundled digits' fixed training split


def check_preset(preset: str, presets: tuple[str, ...], file: str) -> None:
  """Raises ValueError (a user error at the command line) when `preset` is not one of `presets`."""
  if preset not in presets:
    names = ", ".join(p for p in presets if p) or "(none)"
    raise ValueError(f"unknown preset {preset!r} for {file}; choose one of: {names}")


def use_bundled_digits(config: ml_collections.ConfigDict, *, image_size: int, num_epochs: float,
                       batch_size: int = 64, learning_rate: float = 0.05) -> ml_collections.ConfigDict:
  """Turns a paper recipe into its `:digits` preset: the same model on the bundled digits, CPU-sized.

  The digits are upsampled to `image_size` (the smallest size the model's poolings allow, or more); random
  translations of about a tenth of the image replace the paper's crops; SGD with Nesterov momentum and a
  cosine schedule replaces the paper's long schedule. Returns `config`, changed in place.
  """
  config.dataset.name = "digits"
  config.dataset.data_dir = ""
  config.dataset.train_split, config.dataset.eval_split = "train", "test"
  config.dataset.image_size = image_size
  config.dataset.eval_resize = 0
  config.dataset.num_workers = 0  # 1,797 small images: worker processes would cost more than they save
  config.dataset.on_device = "auto"
  config.augment.host = "none"
  config.augment.crop_padding = max(1, round(image_size * 3 / 32))
  config.augment.flip = False  # mirrored digits are other shapes
  config.augment.pca_lighting = 0.0
  config.augment.mixup_alpha = config.augment.cutmix_alpha = 0.0
  config.batch_size, config.eval_batch_size = batch_size, 256
  config.num_epochs, config.num_train_steps = num_epochs, 0
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = learning_rate
  config.optimizer.momentum, config.optimizer.nesterov = 0.9, True
  config.optimizer.weight_decay = 5e-4
  config.schedule.name, config.schedule.warmup_epochs = "cosine", 0.0
  steps_per_epoch = DIGITS_TRAIN_EXAMPLES // batch_size
  config.log_every_steps = max(1, steps_per_epoch // 2)
  config.eval_every_steps = steps_per_epoch * max(1, int(num_epochs) // 4)
  config.checkpoint_every_steps = config.eval_every_steps
  return config


def paper_imagenet(config: ml_collections.ConfigDict, *, batch_size: int, num_epochs: float) -> None:
  """ImageNet defaults shared by the paper recipes: 224 crops, evaluation at shorter side 256 + centre crop."""
  config.dataset.name = "imagenet2012"
  config.dataset.train_split, config.dataset.eval_split = "train", "validation"
  config.dataset.image_size = 224
  config.dataset.eval_resize = 256
  config.dataset.num_workers = 8
  config.augment.flip = True
  config.batch_size, config.eval_batch_size = batch_size, 500  # 50,000 validation images / 500
  config.num_epochs = num_epochs
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
