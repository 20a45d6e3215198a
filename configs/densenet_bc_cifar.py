"""DenseNet-BC (L=100, k=12) on CIFAR-10 with standard augmentation (C10+), as in Huang et al. 2017.

Paper recipe (needs CIFAR-10 prepared, see the README):
  python train.py --config configs/densenet_bc_cifar.py
  SGD with Nesterov momentum 0.9, weight decay 1e-4, batch 64, 300 epochs, learning rate 0.1 divided by 10 at
  50% and 75% of training; pad-4 crop + flip. Expected (published): 4.51% test error (95.49% accuracy).
  `:densenet40` trains the L=40, k=12 network without bottleneck or compression (published: 5.24% on C10+).

Bundled-data preset:
  python train.py --config configs/densenet_bc_cifar.py:digits
  The 8x8 digits upsampled three times, to 24 px (the dense blocks at 24, 12 and 6 px instead of CIFAR's 32, 16
  and 8): at 32 px the preset took 133-144 s on the 2-core CPU, over the 120 s target, and reached 96.90%.
  Expected (measured here, 2-core CPU with AVX-512, 2026-12-02, cold compilation cache): 98.03% test accuracy after
  3 epochs (66 steps), 90-98 s wall in four runs (benchmarks/README.md).
"""
from cnn_flax import recipes, schema

PRESETS = ("", "densenet40", "digits")


def get_config(preset: str = ""):
  recipes.check_preset(preset, PRESETS, "configs/densenet_bc_cifar.py")
  config = schema.base_config()
  config.model.name = "densenet40" if preset == "densenet40" else "densenet_bc_100"
  config.dataset.name = "cifar10"
  config.augment.crop_padding, config.augment.flip = 4, True
  config.batch_size = 64
  config.num_epochs = 300
  config.optimizer.name, config.optimizer.learning_rate = "sgd", 0.1
  config.optimizer.momentum, config.optimizer.nesterov, config.optimizer.weight_decay = 0.9, True, 1e-4
  config.schedule.name, config.schedule.decay_at = "step", (0.5, 0.75)
  config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = 100, 3910, 3910  # 5 epochs
  if preset == "digits":
    recipes.use_bundled_digits(config, image_size=24, num_epochs=3, batch_size=64, learning_rate=0.1)
  return config
