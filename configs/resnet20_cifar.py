"""ResNet-20 on CIFAR-10, as in He et al. 2016, section 4.2 (option-A shortcuts, 16-32-64 channels).

Paper recipe (needs CIFAR-10 prepared, see the README):
  python train.py --config configs/resnet20_cifar.py
  SGD momentum 0.9, weight decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and 48k iterations,
  stop at 64k; 4-pixel padding + random 32x32 crop + horizontal flip.
  Expected (published): 8.75% test error (91.25% accuracy). Other depths: --config.model.name=resnet56 (6.97%),
  resnet110 (6.43%). `:plain` removes the shortcuts: the paper's degradation experiment (its Fig. 6), where
  plain networks get worse with depth and residual ones better.

Bundled-data preset, runs on a laptop CPU:
  python train.py --config configs/resnet20_cifar.py:digits
  Expected (measured here, 2-core CPU with AVX-512, 2026-12-02, cold compilation cache): 99.15% test accuracy after 15
  epochs at 32 px (330 steps), 37-44 s wall (150-179 s and 99.44% on the earlier AVX2 CPU).
"""
from cnn_flax import recipes, schema

PRESETS = ("", "plain", "digits")


def get_config(preset: str = ""):
  recipes.check_preset(preset, PRESETS, "configs/resnet20_cifar.py")
  config = schema.base_config()
  config.model.name = "resnet20"
  if preset == "plain":
    config.model.kwargs.plain = True
  config.dataset.name = "cifar10"
  config.augment.crop_padding, config.augment.flip = 4, True
  config.batch_size = 128
  config.num_train_steps = 64_000
  config.optimizer.name, config.optimizer.learning_rate = "sgd", 0.1
  config.optimizer.momentum, config.optimizer.weight_decay = 0.9, 1e-4
  config.schedule.name, config.schedule.decay_at = "step", (0.5, 0.75)  # 32k and 48k of 64k
  config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = 100, 2000, 4000
  if preset == "digits":
    recipes.use_bundled_digits(config, image_size=32, num_epochs=15, batch_size=64, learning_rate=0.1)
  return config
