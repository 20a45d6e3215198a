"""The study's base recipe: one model, a fixed budget, the low-data regime; configs/sweeps/ vary the model on it.

The bundled digits saturate near 99% for every family, which hides every difference between architectures. So the
default trains on a class-stratified 10% of the training split (144 images, the same for every seed; see
`dataset.train_fraction`) for a fixed 300 steps of batch 32 (about 67 epochs), evaluates on the whole test split
every 100 steps, and keeps the recipe identical for every model: SGD with Nesterov momentum 0.9, learning rate
0.05 on a cosine schedule, weight decay 5e-4, random translations of up to 3 pixels, 32x32 inputs.

  python train.py --config configs/study.py                      # ResNet-20 on 10% of the digits
  python train.py --config configs/study.py:cifar10              # the same on 10% of CIFAR-10 (5,000 images)
  python sweep.py --sweep configs/sweeps/shortcuts.py --workdir runs/shortcuts --seeds 3
  python sweep.py --sweep configs/sweeps/shortcuts.py --config configs/study.py:cifar10 --workdir runs/sc_cifar

Expected (measured here, 2-core CPU, `sweep.py --set model.name=lenet5,resnet20,mobilenet_v1`): LeNet-5 95.5%,
ResNet-20 97.7%, MobileNet v1 94.9% test accuracy (one seed each), 12 s, 68 s and 62 s wall; with 5% of the
training split: 93.8%, 90.4%, 91.8%. The sweep files' docstrings give each comparison's figures.

`:cifar10` (needs CIFAR-10 prepared, see the README): 5,000 training images (10%), 4-pixel padding + random crop +
horizontal flip, batch 128 for 4,000 steps (about 100 epochs), learning rate 0.1: every sweep file runs on it
unchanged with `--config configs/study.py:cifar10`. Use `--set dataset.train_fraction=1.0` for the full dataset.
"""
from cnn_flax import recipes, schema

PRESETS = ("", "cifar10")


def get_config(preset: str = ""):
  recipes.check_preset(preset, PRESETS, "configs/study.py")
  config = schema.base_config()
  config.model.name = "resnet20"
  config.dataset.name = "digits"
  config.dataset.image_size = 32
  config.dataset.train_fraction = 0.1
  config.augment.crop_padding = 3
  config.batch_size, config.eval_batch_size = 32, 256
  config.num_train_steps = 300
  config.optimizer.name, config.optimizer.learning_rate = "sgd", 0.05
  config.optimizer.momentum, config.optimizer.nesterov, config.optimizer.weight_decay = 0.9, True, 5e-4
  config.schedule.name = "cosine"
  config.log_every_steps, config.eval_every_steps = 50, 100
  config.checkpoint_every_steps, config.keep_checkpoints = 0, 1  # sweeps keep the final state only
  if preset == "cifar10":
    config.dataset.name = "cifar10"
    config.augment.crop_padding, config.augment.flip = 4, True
    config.batch_size, config.eval_batch_size = 128, 500
    config.num_train_steps = 4000
    config.optimizer.learning_rate = 0.1
    config.log_every_steps, config.eval_every_steps = 100, 1000
  return config
