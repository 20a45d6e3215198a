"""Claim: DenseNets reuse features, so they need fewer parameters for the same accuracy; growth rate k and
compression theta set the trade-off (Huang et al. 2017, Table 2 and sec. 4.3).

Paper (CIFAR-10 with augmentation): DenseNet (L=40, k=12) 5.24% error with 1.0M parameters, DenseNet-BC
(L=100, k=12) 4.51% with 0.8M, against ResNet-110 6.41% with 1.7M; larger k lowers the error (DenseNet-BC L=250,
k=24: 3.62% with 15.3M).

Here: a DenseNet-BC of depth 40 (three blocks of 6 bottleneck layers: `block_sizes=(6, 6, 6)` on densenet_bc_100)
with growth rate k = 6, 12, 24 and compression 0.5 (BC) or 1.0 (no compression), on the study recipe; ResNet-20
(0.27M parameters) is the residual reference.

  python sweep.py --sweep configs/sweeps/densenet_growth.py --workdir runs/densenet --seeds 2

Measured here: not yet. The study's CPU time in the sessions so far went to the claims ahead of this one in the
README's table; the command above is ready, and the README says which claims were measured.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  dense = product(model__name=["densenet_bc_100"], model__kwargs__block_sizes=[(6, 6, 6)],
                  model__kwargs__growth_rate=[6, 12, 24], model__kwargs__compression=[0.5, 1.0])
  return dense + [{"model.name": "resnet20"}]
