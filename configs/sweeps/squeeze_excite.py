"""Claim: squeeze-and-excitation improves a backbone for little cost; the reduction ratio r trades accuracy for
parameters (Hu et al. 2018, Tables 2 and 5).

Paper (ImageNet, SE-ResNet-50): top-1 error 23.29% (r = 16) against 24.80% for ResNet-50 (Table 2, their
re-implementation), for +2.5M parameters (+10%) and +0.26% FLOPs; Table 5: r = 4, 8, 16, 32 give 22.25, 22.31, 22.34
and 22.71% (with their training setup), 35.7M, 30.9M, 28.1M, 26.7M parameters.

Here: ResNet-20 (CIFAR) without SE and with r = 4, 8, 16, 32 (the gate after each block's last BN, before the
addition), and MobileNet v1 (width 0.5) without and with SE (r = 16, inside each block), on the study recipe.

  python sweep.py --sweep configs/sweeps/squeeze_excite.py --workdir runs/se --seeds 2

Measured here (2-core CPU, two seeds, 15.5 minutes with other jobs on the machine; test accuracy %, mean +- 95%
interval, the seeds in brackets):
  ResNet-20        no SE 98.2 +- 5.4 (97.7, 98.6); r = 4: 95.6 +- 9.0 (94.9, 96.3); 8: 96.1 +- 10.7 (96.9, 95.2);
                   16: 95.8 +- 3.6 (96.1, 95.5); 32: 96.9 +- 0.0 (96.9, 96.9)
                   (parameters 269,434; +3.1% at r = 4, +0.9% at r = 16; MACs +0.02% at most)
  MobileNet 0.5x   no SE 93.9 +- 5.4 (94.4, 93.5); r = 16: 92.8 +- 9.0 (92.1, 93.5)
                   (parameters +10.9%, MACs +2.9%)
The cost side is as the paper says: SE adds a few percent of parameters and almost no MACs. The accuracy gain is not
seen in this regime. By the 95% rule there is no difference between any two settings, and if anything SE costs
accuracy here: all eight SE runs on ResNet-20 (94.9-96.9%) are below both runs without it. With 144 training
images and 300 steps, the gates (which start near sigmoid(0) = 0.5, about halving every residual branch) are
extra parameters to fit rather than a better model; the paper's gain is on 1.28M ImageNet images over 100 epochs.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  resnet = product(model__name=["resnet20"], model__kwargs__se_ratio=[None, 4, 8, 16, 32])
  mobilenet = product(model__name=["mobilenet_v1"], model__kwargs__width_multiplier=[0.5],
                      model__kwargs__se_ratio=[None, 16])
  return resnet + mobilenet
