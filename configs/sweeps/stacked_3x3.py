"""Claim: a stack of 3x3 convolutions beats one large kernel of the same receptive field, with fewer parameters
per layer pair (Simonyan & Zisserman 2015, sec. 2.3 and 4.1).

Paper (ImageNet): configuration B with each pair of 3x3 convolutions replaced by one 5x5 had a top-1 error 7% higher
than B (centre crop). Two 3x3 layers of C channels hold 18C^2 weights against 25C^2 for one 5x5, and three 3x3 hold
27C^2 against 49C^2 for one 7x7, with more non-linearities in between.

Here: VGG-B (vgg13_bn) and VGG-D (vgg16_bn) against the same networks with each stage's stack of 3x3 convolutions
replaced by one convolution of the same receptive field (`large_kernels=True`: B's pairs become 5x5, D's triples
7x7), BatchNorm variants (the BN-free nets stay at chance in CPU-sized runs), a 256-wide classifier (the paper's
4096 would dominate every figure at 32 px), on the study recipe at learning rate 0.01 (at the study's 0.05 these
VGGs collapse to a constant output within 50 steps; 0.01 is the paper's and torchvision's rate).

  python sweep.py --sweep configs/sweeps/stacked_3x3.py --workdir runs/stacked_3x3 --seeds 2

Measured here (2-core CPU, two seeds, 32 minutes with other jobs on the machine; test accuracy %, mean +- 95%
interval, the seeds in brackets):

  network              params   MACs      accuracy
  B, 3x3 pairs         15.90M   233.6M    97.6 +- 1.8 (97.5, 97.7)
  B, 5x5               17.35M   191.6M    97.7 +- 3.6 (97.5, 98.0)
  D, 3x3 triples       21.21M   318.5M    97.5 +- 0.0 (97.5, 97.5)
  D, 7x7 (and 5x5)     27.58M   317.5M    97.3 +- 1.8 (97.5, 97.2)

Parameters go the paper's way: one large kernel costs 9% more than B's pairs and 30% more than D's triples. MACs
do not simply follow, because the first convolution of each stage reads the narrower input (C/2 channels, or the
one grey channel in the first stage): there one 5x5 or 7x7 is cheaper than a 3x3 followed by a C-wide 3x3, so the
large-kernel B does 18% fewer MACs. Accuracy: no difference; every run lands at 97.2-98.0% on the 355 test
digits, where the paper measured a 7% higher top-1 error on ImageNet. At 32 px the digits give a 3x3 stack little
to gain over one larger window in 300 steps; the claim needs ImageNet-sized images and data to show (or CIFAR-10:
`--config configs/study.py:cifar10`).
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["vgg13_bn", "vgg16_bn"], model__kwargs__large_kernels=[False, True],
                 model__kwargs__classifier_width=[256],
                 optimizer__learning_rate=[0.01])
