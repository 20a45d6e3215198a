"""AlexNet on ImageNet: torchvision's single-tower network, or with `:paper` the 2012 two-GPU layout.

Paper recipe (needs ImageNet prepared, see the README):
  python train.py --config configs/alexnet.py          # torchvision's alexnet; published 56.5% top-1
  python train.py --config configs/alexnet.py:paper    # Krizhevsky et al. 2012 (LRN, groups=2, 227 px input)
  SGD momentum 0.9, weight decay 5e-4, batch 128, learning rate 0.01 divided by 10 on plateaus (here at 1/3 and
  2/3 of training), 90 epochs; random 224 crops of the 256x256 image + flip + PCA colour noise (sigma 0.1).
  Expected (published, one network): 40.7% top-1 / 18.2% top-5 error; evaluate with --ten_crop as the paper.

Bundled-data preset (AlexNet's stride-4 stem needs >= 63 px):
  python train.py --config configs/alexnet.py:digits
  Expected (measured here, 2-core CPU with AVX-512, 2026-12-02, cold compilation cache): 98.87% test accuracy after 15
  epochs at 64 px (330 steps), 31-37 s wall (82-91 s on the earlier AVX2 CPU, 98.59%).
"""
from cnn_flax import recipes, schema

PRESETS = ("", "paper", "digits")


def get_config(preset: str = ""):
  recipes.check_preset(preset, PRESETS, "configs/alexnet.py")
  config = schema.base_config()
  config.model.name = "alexnet_paper" if preset == "paper" else "alexnet"
  recipes.paper_imagenet(config, batch_size=128, num_epochs=90)
  if preset == "paper":
    config.dataset.image_size = 227
  config.augment.host, config.augment.scale = "scale_jitter", (256, 256)  # a random crop of the 256 image
  config.augment.pca_lighting = 0.1
  config.optimizer.name, config.optimizer.learning_rate = "sgd", 0.01
  config.optimizer.momentum, config.optimizer.weight_decay = 0.9, 5e-4
  config.schedule.name, config.schedule.decay_at = "step", (1 / 3, 2 / 3)
  if preset == "digits":
    recipes.use_bundled_digits(config, image_size=64, num_epochs=15, batch_size=64, learning_rate=0.01)
    config.model.kwargs.classifier_width = 512
  return config
