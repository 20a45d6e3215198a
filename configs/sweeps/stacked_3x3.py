"""Claim: a stack of 3x3 convolutions beats one large kernel of the same receptive field, with fewer parameters
per layer pair (Simonyan & Zisserman 2015, sec. 2.3 and 4.1).

Paper (ImageNet): configuration B with each pair of 3x3 convolutions replaced by one 5x5 had a top-1 error 7% higher
than B (centre crop). Two 3x3 layers of C channels hold 18C^2 weights against 25C^2 for one 5x5, and three 3x3 hold
27C^2 against 49C^2 for one 7x7, with more non-linearities in between.

Here: VGG-B (vgg13_bn) and VGG-D (vgg16_bn) against the same networks with each stage's stack of 3x3 convolutions
replaced by one convolution of the same receptive field (`large_kernels=True`: B's pairs become 5x5, D's triples
7x7), BatchNorm variants (the BN-free nets stay at chance in CPU-sized runs), a 256-wide classifier (the paper's
4096 would dominate every figure at 32 px), on the study recipe.

  python sweep.py --sweep configs/sweeps/stacked_3x3.py --workdir runs/stacked_3x3 --seeds 2

Measured here: not yet. The study's CPU time in the sessions so far went to the claims ahead of this one in the
README's table; the command above is ready, and the README says which claims were measured.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["vgg13_bn", "vgg16_bn"], model__kwargs__large_kernels=[False, True],
                 model__kwargs__classifier_width=[256],
                 optimizer__learning_rate=[0.01])
