"""Claim: local response normalisation helps AlexNet a little (Krizhevsky et al. 2012, sec. 3.3) and adds nothing
to VGG (Simonyan & Zisserman 2015, Table 3).

Paper: AlexNet's response normalisation lowers its top-1 / top-5 error by 1.4 / 1.2 points; VGG's A-LRN (LRN after
the first layer) has 29.7 / 10.5% error against A's 29.6 / 10.4% (single scale): no gain.

Here: the BN-free networks the claim is about, with and without their LRN layers: VGG A (vgg11) against A-LRN
(vgg11_lrn), and the 2012 AlexNet (alexnet_paper, at 67 px) with `lrn` on and off; 512-wide classifiers (the
paper's 4096 would make each step an update of 100M+ weights at these input sizes).

  python sweep.py --sweep configs/sweeps/lrn.py --workdir runs/lrn --seeds 3

Measured here (2-core CPU): both BN-free networks stay at chance (10.1% test accuracy, loss 2.303) within the
study's 300 steps, with and without LRN (alexnet_paper at 67 px: 126 s and 116 s wall; one seed), as the
BN-free VGG-16 and GoogLeNet did before with learning rates 0.01 to 0.05: with the papers' initialisations
(N(0, 0.01) weights) their early gradients are about 0.17 in norm, and the papers trained 74-90 ImageNet epochs. The
claim cannot be tested in a CPU budget; on a GPU, run this file with each paper's recipe
(`--config configs/alexnet.py` / `configs/vgg16.py` and `--set model.name=...`).
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  vgg = product(model__name=["vgg11", "vgg11_lrn"], model__kwargs__classifier_width=[512])
  alexnet = product(model__name=["alexnet_paper"], model__kwargs__lrn=[True, False],
                    model__kwargs__classifier_width=[512], dataset__image_size=[67])
  return vgg + alexnet
