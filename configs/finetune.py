"""Fine-tuning: start from pretrained weights, replace the classifier head, freeze the first stages.

Your images, from ImageNet weights converted from torchvision (see "Importing pretrained weights" in the README):
  python -c "from cnn_flax import convert, checkpoint; checkpoint.save_variables('resnet50_tv.npz',
    convert.from_torchvision('resnet50', convert.load_state_dict('resnet50-11ad3fa6.pth')))"
  python train.py --config configs/finetune.py --config.dataset.data_dir=PATH/TO/ROOT \\
      --config.init_from=resnet50_tv.npz
  ROOT/train/<class>/<image> and ROOT/test/<class>/<image>; the head gets one output per class folder and
  starts fresh (its shape differs from the 1000-class head); stem and layer1 stay frozen.
  Expected: depends on your data; nothing measured here (no pretrained weights on this machine).

On the bundled digits, from the main LeNet-5 job (run `python train.py --config configs/lenet5.py` first):
  python train.py --config configs/finetune.py:digits
  fine-tunes runs/lenet5 with the convolutions frozen (only f5, f6 and the output layer train; the classes are
  the same, so no layer starts fresh here). Expected (measured here, 2-core CPU): 110 steps in 22 s wall,
  99.15% test accuracy (the starting point had 99.15% too; loss 0.0351 -> 0.0342).
"""
from cnn_flax import recipes, schema

PRESETS = ("", "digits")


def get_config(preset: str = ""):
  recipes.check_preset(preset, PRESETS, "configs/finetune.py")
  config = schema.base_config()
  config.model.name = "resnet50"
  config.dataset.name = "folder"
  config.dataset.image_size = 224
  config.dataset.eval_resize = 256
  config.augment.host, config.augment.flip = "random_resized_crop", True
  config.batch_size = 32
  config.num_epochs = 10
  config.optimizer.name, config.optimizer.learning_rate = "sgd", 0.01
  config.optimizer.momentum, config.optimizer.weight_decay = 0.9, 1e-4
  config.schedule.name = "cosine"
  config.freeze = ("stem", "layer1")
  if preset == "digits":
    config.model.name = "lenet5"
    recipes.use_bundled_digits(config, image_size=32, num_epochs=5, batch_size=64, learning_rate=0.01)
    config.init_from = "runs/lenet5"
    config.freeze = ("c1", "c3")
  return config
