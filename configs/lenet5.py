"""LeNet-5 on the bundled handwritten digits (1,442 train / 355 test images, upsampled to 32x32).

Command (from the repository root):
  python train.py --config configs/lenet5.py --workdir runs/lenet5

Expected (measured on a 2-core x86 CPU, `python benchmarks/lenet5_digits.py`): 440 steps (20 epochs),
about 11 s wall from a cold start (imports and compilation included) and 8 s with the compilation cache
warm; 99.15% test accuracy (352 of 355) on that CPU, 98.59% (350 of 355, loss 0.0497) on the AVX2 AMD EPYC
machine of the later sessions, and 98.87% (351 of 355, loss 0.0480) with 7.6 s cold / 5.5 s warm on the AVX-512
EPYC of 2026-12-02 with oneDNN's convolutions: the CPU numerics differ between processors and libraries. The `:paper`
preset reached 99.15% in about 10 s on the first.

Presets: `configs/lenet5.py:paper` trains `lenet5_paper`, the 1998 network (partial C3 table, trainable
subsampling, scaled tanh), with the same recipe.
"""
from cnn_flax import recipes, schema

PRESETS = ("", "paper")


def get_config(preset: str = ""):
  recipes.check_preset(preset, PRESETS, "configs/lenet5.py")
  config = schema.base_config()
  config.model.name = {"": "lenet5", "paper": "lenet5_paper"}[preset]
  config.dataset.name = "digits"
  config.dataset.image_size = 32
  # Random translations of up to 3 px: 1,442 tiny digits are memorised within a few epochs without them.
  config.augment.crop_padding = 3
  config.batch_size = 64
  config.num_epochs = 20.0
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "cosine"
  config.log_every_steps = 20
  config.eval_every_steps = 110  # every 5 epochs
  config.checkpoint_every_steps = 220  # every 10 epochs
  return config
