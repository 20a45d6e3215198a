"""DenseNet-121 (k=32) on ImageNet, following Huang et al. 2017 and torchvision.

Paper recipe (needs ImageNet prepared, see the README):
  python train.py --config configs/densenet121.py
  SGD with Nesterov momentum 0.9, weight decay 1e-4, batch 256, learning rate 0.1 divided by 10 at epochs 30
  and 60, 90 epochs; random-resized crop + flip. Expected (published, torchvision): 74.4% top-1.

Bundled-data preset:
  python train.py --config configs/densenet121.py:digits
  Expected (measured here, 2-core CPU with AVX-512, 2026-12-02, cold compilation cache): 94.37% test accuracy after 3
  epochs at 32 px (66 steps), 43-75 s wall (117-139 s and 96.62% on the earlier AVX2 CPU, Flax's BatchNorm).
"""
from cnn_flax import recipes, schema

PRESETS = ("", "digits")


def get_config(preset: str = ""):
  recipes.check_preset(preset, PRESETS, "configs/densenet121.py")
  config = schema.base_config()
  config.model.name = "densenet121"
  recipes.paper_imagenet(config, batch_size=256, num_epochs=90)
  config.augment.host = "random_resized_crop"
  config.optimizer.name, config.optimizer.learning_rate = "sgd", 0.1
  config.optimizer.momentum, config.optimizer.nesterov, config.optimizer.weight_decay = 0.9, True, 1e-4
  config.schedule.name, config.schedule.decay_at = "step", (1 / 3, 2 / 3)
  if preset == "digits":
    recipes.use_bundled_digits(config, image_size=32, num_epochs=3, batch_size=64, learning_rate=0.1)
  return config
