"""Claim: shortcuts let deep networks train where plain ones degrade (He et al. 2016, sec. 4.2 and Fig. 6).

Paper (CIFAR-10): the plain 56-layer network has a higher training *and* test error than the plain 20-layer one
(the degradation problem), while the residual 56-layer network is better than the residual 20-layer one;
ResNet-20 / ResNet-56 test error 8.75% / 6.97%.

Here: the CIFAR ResNets of the paper (option-A shortcuts, 16-32-64 maps) with and without shortcuts
(`plain=True`), 20 and 56 layers, on the study recipe (configs/study.py: 10% of the digits, 300 steps).

  python sweep.py --sweep configs/sweeps/shortcuts.py --workdir runs/shortcuts --seeds 2
  python sweep.py --sweep configs/sweeps/shortcuts.py --config configs/study.py:cifar10 --workdir runs/sc10 --seeds 3

Measured here (2-core CPU, 2 seeds, about 27 minutes with other jobs on the machine; a run of ResNet-20 takes
80 s, of ResNet-56 4-7 min), final test accuracy, mean (seed 0, seed 1):
  ResNet-20 98.2% (97.8, 98.6)     plain-20 97.3% (97.7, 96.9)
  ResNet-56 95.4% (96.1, 94.6)     plain-56 39.7% (9.9, 69.6)
The degradation is reproduced, training loss included: at step 300 the plain 56-layer net's training loss is 2.30
(seed 0, never left chance) and 0.73, against 0.007 for the plain 20-layer net, while the residual 56-layer net
trains to 0.009. Unlike the paper, ResNet-56 does not beat ResNet-20 in 300 steps (the deeper net converges later;
with two seeds the intervals, +-5 to 9 points, could not separate them anyway). At 20 layers plain and residual
are within each other's interval: no difference, as in the paper's Fig. 6 at that depth.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["resnet20", "resnet56"], model__kwargs__plain=[False, True])
