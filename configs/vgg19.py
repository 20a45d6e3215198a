"""VGG-19 (configuration E) on ImageNet, following Simonyan & Zisserman 2015; recipe as configs/vgg16.py.

Paper recipe (needs ImageNet prepared, see the README):
  python train.py --config configs/vgg19.py          # Expected (published): 72.4% top-1 (torchvision's model)
  python train.py --config configs/vgg19.py:bn       # torchvision's vgg19_bn; expected (published): 74.2%

Bundled-data preset (trains vgg19_bn, as configs/vgg16.py explains):
  python train.py --config configs/vgg19.py:digits
  Expected (measured here, 2-core CPU with AVX-512, 2026-12-02, cold compilation cache): 96.62% test accuracy after 4
  epochs (88 steps), 60-67 s wall (222 s and 92.39% on the earlier AVX2 CPU).
"""
from configs import vgg16

PRESETS = vgg16.PRESETS


def get_config(preset: str = ""):
  return vgg16.get_config(preset, model="vgg19", file="configs/vgg19.py")
