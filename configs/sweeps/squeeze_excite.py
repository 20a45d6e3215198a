"""Claim: squeeze-and-excitation improves a backbone for little cost; the reduction ratio r trades accuracy for
parameters (Hu et al. 2018, Tables 2 and 5).

Paper (ImageNet, SE-ResNet-50): top-1 error 23.29% (r = 16) against 24.80% for ResNet-50 (Table 2, their
re-implementation), for +2.5M parameters (+10%) and +0.26% FLOPs; Table 5: r = 4, 8, 16, 32 give 22.25, 22.31, 22.34
and 22.71% (with their training setup), 35.7M, 30.9M, 28.1M, 26.7M parameters.

Here: ResNet-20 (CIFAR) without SE and with r = 4, 8, 16, 32 (the gate after each block's last BN, before the
addition), and MobileNet v1 (width 0.5) without and with SE (r = 16, inside each block), on the study recipe.

  python sweep.py --sweep configs/sweeps/squeeze_excite.py --workdir runs/se --seeds 1

Measured here (2-core CPU, one seed, 8.5 minutes with other jobs on the machine), final test accuracy:
  ResNet-20        no SE 97.7%; r = 4: 94.9, 8: 96.9, 16: 96.1, 32: 96.9
                   (parameters 269,434; +3.1% at r = 4, +0.9% at r = 16; MACs +0.02% at most)
  MobileNet 0.5x   no SE 94.4%; r = 16: 92.1 (parameters +10.9%, MACs +2.9%)
The cost side is as the paper says: SE adds a few percent of parameters and almost no MACs. The accuracy gain is
not seen in this regime: every SE variant lands within the seed-to-seed spread of ResNet-20 itself (95.2-98.6%
over three seeds in the shortcut sweep), so one seed cannot separate r = 4..32, nor SE from none.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  resnet = product(model__name=["resnet20"], model__kwargs__se_ratio=[None, 4, 8, 16, 32])
  mobilenet = product(model__name=["mobilenet_v1"], model__kwargs__width_multiplier=[0.5],
                      model__kwargs__se_ratio=[None, 16])
  return resnet + mobilenet
