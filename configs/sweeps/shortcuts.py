"""Claim: shortcuts let deep networks train where plain ones degrade (He et al. 2016, sec. 4.2 and Fig. 6).

Paper (CIFAR-10): the plain 56-layer network has a higher training *and* test error than the plain 20-layer one
(the degradation problem), while the residual 56-layer network is better than the residual 20-layer one;
ResNet-20 / ResNet-56 test error 8.75% / 6.97%.

Here: the CIFAR ResNets of the paper (option-A shortcuts, 16-32-64 maps) with and without shortcuts
(`plain=True`), 20 and 56 layers, on the study recipe (configs/study.py: 10% of the digits, 300 steps).

  python sweep.py --sweep configs/sweeps/shortcuts.py --workdir runs/shortcuts --seeds 3
  python sweep.py --sweep configs/sweeps/shortcuts.py --config configs/study.py:cifar10 --workdir runs/sc10 --seeds 3

Measured here (2-core CPU): RESULT
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["resnet20", "resnet56"], model__kwargs__plain=[False, True])
