"""Claim: GoogLeNet's auxiliary classifiers help it train (Szegedy et al. 2014, sec. 5); Inception v3's authors
later found they do not speed early convergence and act as regularisers (Szegedy et al. 2016, sec. 4).

Paper: the auxiliary losses, weighted 0.3 and discarded at inference, were added "to encourage discrimination in the
lower stages ... increase the gradient signal ... and provide additional regularization"; no ablation was published
for GoogLeNet; Inception v3 reports "a relatively minor effect" (about 0.4% top-1 with a batch-normalized aux head).

Here: GoogLeNet (torchvision's BatchNorm reading) with the auxiliary losses weighted 0 (off) and 0.3, on the study
recipe (the heads pool their 2x2 inputs adaptively at 32 px).

  python sweep.py --sweep configs/sweeps/aux_heads.py --workdir runs/aux_heads --seeds 3

Measured here (2-core CPU): RESULT
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["googlenet_bn"], aux_loss_weight=[0.0, 0.3])
