"""Claim: 1x1 convolutions cut an Inception module's cost (Szegedy et al. 2014, sec. 4 and Fig. 2).

Paper: the naive module (Fig. 2a: 1x1, 3x3 and 5x5 convolutions of the input and its max-pool, concatenated) makes
the width grow from module to module ("a computational blow up"); 1x1 reductions before the 3x3 and 5x5 and after
the pooling keep GoogLeNet at 6.8M parameters and 1.5 G multiply-adds. No accuracy of a naive GoogLeNet was
published.

Here: GoogLeNet (torchvision's BatchNorm reading: the paper's BN-free net stays at chance in CPU-sized runs) with
and without the reductions (`inception_reductions=False`), no auxiliary heads in the loss; at 224 px the naive
network has 70,300,872 parameters and 9.02 G MACs against 6,624,904 and 1.50 G (97.5M / 12.6 G against 7.0M / 1.58 G
for the paper's BN-free reading); trained on the study recipe at 32 px.

  python sweep.py --sweep configs/sweeps/inception_reductions.py --workdir runs/inception --seeds 2

Measured here (2-core CPU, two seeds, 12.5 minutes with other jobs on the machine), at 32 px, test accuracy %,
mean +- 95% interval, the seeds in brackets:
  with 1x1 reductions   5,603,882 parameters,  29.0M MACs, 118 training images/s, 48.9 +- 69.8 (43.4, 54.4)
  naive modules        65,399,050 parameters, 182.5M MACs,  34 training images/s, 92.1 +- 25.1 (90.1, 94.1)
The cost claim is reproduced: the reductions cut parameters 11.7x and MACs 6.3x (at 224 px: 10.6x and 6.0x).
Accuracy goes the other way here: the wide naive network learns faster from 144 images in 300 steps (both of its
seeds beat both of the reduced network's, though the two-seed intervals overlap; the paper made no accuracy claim
for it). The reduced network's figures equal the aux-head sweep's with weight 0, seed for seed and bit for bit,
as they should (the same runs).
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["googlenet_bn"], model__kwargs__inception_reductions=[True, False],
                 aux_loss_weight=[0.0])
