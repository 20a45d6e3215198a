"""Claim: GoogLeNet's auxiliary classifiers help it train (Szegedy et al. 2014, sec. 5); Inception v3's authors
later found they do not speed early convergence and act as regularisers (Szegedy et al. 2016, sec. 4).

Paper: the auxiliary losses, weighted 0.3 and discarded at inference, were added "to encourage discrimination in the
lower stages ... increase the gradient signal ... and provide additional regularization"; no ablation was published
for GoogLeNet; Inception v3 reports "a relatively minor effect" (about 0.4% top-1 with a batch-normalized aux head).

Here: GoogLeNet (torchvision's BatchNorm reading) with the auxiliary losses weighted 0 (off) and 0.3, on the study
recipe (the heads pool their 2x2 inputs adaptively at 32 px).

  python sweep.py --sweep configs/sweeps/aux_heads.py --workdir runs/aux_heads --seeds 2

Measured here (2-core CPU, 2 seeds, about 10 minutes with other jobs on the machine), final test accuracy:
  aux weight 0     43.4 / 54.4% (mean 48.9 +- 69.8)
  aux weight 0.3   83.4 / 43.4% (mean 63.4 +- 254)
No difference by the 95% rule: the seeds disagree more than the settings do, since GoogLeNet is still far from
converged after 300 steps on 144 images (its accuracy rising at every evaluation). Three or more seeds, or the
CIFAR-10 recipe, are needed to see a 0.4-point effect like Inception v3's.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["googlenet_bn"], aux_loss_weight=[0.0, 0.3])
