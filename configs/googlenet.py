"""GoogLeNet (Inception v1, Szegedy et al. 2014) with its two auxiliary classifiers (loss weight 0.3).

Paper recipe (needs ImageNet prepared, see the README):
  python train.py --config configs/googlenet.py        # the paper's network (5x5 branches, LRN, no BN)
  python train.py --config configs/googlenet.py:bn     # torchvision's googlenet (BN); published 69.8% top-1
  SGD momentum 0.9, batch 256 (the paper trained asynchronously), learning rate 0.01; random-resized crop
  (8-100% area, aspect 3/4-4/3) + flip. Stated deviations: the paper decays the rate by 4% every 8 epochs and
  averages parameters (Polyak); here a cosine schedule over 90 epochs and no averaging.
  Expected (published): 10.07% top-5 error, one model, one crop.

Bundled-data preset (the auxiliary 5x5/3 pooling on 4a needs >= 80 px; trains googlenet_bn, see get_config):
  python train.py --config configs/googlenet.py:digits
  Expected (measured here, 2-core CPU with AVX-512, 2026-12-02, cold compilation cache): googlenet_bn, 99.15% test
  accuracy after 4 epochs at 96 px (88 steps), 91-130 s wall (242 s on the earlier AVX2 CPU).
"""
from cnn_flax import recipes, schema

PRESETS = ("", "bn", "digits")


def get_config(preset: str = ""):
  recipes.check_preset(preset, PRESETS, "configs/googlenet.py")
  config = schema.base_config()
  config.model.name = "googlenet_bn" if preset == "bn" else "googlenet"
  recipes.paper_imagenet(config, batch_size=256, num_epochs=90)
  config.augment.host = "random_resized_crop"
  config.aux_loss_weight = 0.3
  config.optimizer.name, config.optimizer.learning_rate = "sgd", 0.01
  config.optimizer.momentum, config.optimizer.weight_decay = 0.9, 2e-4
  config.schedule.name = "cosine"
  if preset == "digits":
    # The paper's network (no BatchNorm) stays at chance level in a CPU-sized run (measured here: 88 steps at
    # 0.02, eval accuracy 10.1% throughout); the digits preset trains torchvision's BN variant.
    config.model.name = "googlenet_bn"
    recipes.use_bundled_digits(config, image_size=96, num_epochs=4, batch_size=64, learning_rate=0.02)
  return config
