"""Claim: squeeze-and-excitation improves a backbone for little cost; the reduction ratio r trades accuracy for
parameters (Hu et al. 2018, Tables 2 and 5).

Paper (ImageNet, SE-ResNet-50): top-1 error 23.29% (r = 16) against 24.80% for ResNet-50 (Table 2, their
re-implementation), for +2.5M parameters (+10%) and +0.26% FLOPs; Table 5: r = 4, 8, 16, 32 give 22.25, 22.31, 22.34
and 22.71% (with their training setup), 35.7M, 30.9M, 28.1M, 26.7M parameters.

Here: ResNet-20 (CIFAR) without SE and with r = 4, 8, 16, 32 (the gate after each block's last BN, before the
addition), and MobileNet v1 (width 0.5) without and with SE (r = 16, inside each block), on the study recipe.

  python sweep.py --sweep configs/sweeps/squeeze_excite.py --workdir runs/se --seeds 3

Measured here (2-core CPU): RESULT
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  resnet = product(model__name=["resnet20"], model__kwargs__se_ratio=[None, 4, 8, 16, 32])
  mobilenet = product(model__name=["mobilenet_v1"], model__kwargs__width_multiplier=[0.5],
                      model__kwargs__se_ratio=[None, 16])
  return resnet + mobilenet
