"""Claim: DenseNets reuse features, so they need fewer parameters for the same accuracy; growth rate k and
compression theta set the trade-off (Huang et al. 2017, Table 2 and sec. 4.3).

Paper (CIFAR-10 with augmentation): DenseNet (L=40, k=12) 5.24% error with 1.0M parameters, DenseNet-BC
(L=100, k=12) 4.51% with 0.8M, against ResNet-110 6.41% with 1.7M; larger k lowers the error (DenseNet-BC L=250,
k=24: 3.62% with 15.3M).

Here: a DenseNet-BC of depth 40 (three blocks of 6 bottleneck layers: `block_sizes=(6, 6, 6)` on densenet_bc_100)
with growth rate k = 6, 12, 24 and compression 0.5 (BC) or 1.0 (bottlenecks only: DenseNet-B), on the study
recipe; ResNet-20 (0.27M parameters) is the residual reference.

  python sweep.py --sweep configs/sweeps/densenet_growth.py --workdir runs/densenet --seeds 2

Measured here (2-core CPU, two seeds, 53.6 minutes with other jobs on the machine; test accuracy %, mean +- 95%
interval, the two seeds in brackets):

  network                       params   MACs     accuracy
  DenseNet-BC-40, k=6,  theta 0.5   0.05M    20.9M    92.7 +- 10.7 (93.5, 91.8)
  DenseNet-B-40,  k=6,  theta 1.0   0.07M    26.3M    93.1 +-  5.4 (92.7, 93.5)
  DenseNet-BC-40, k=12, theta 0.5   0.18M    71.9M    93.9 +-  1.8 (93.8, 94.1)
  DenseNet-B-40,  k=12, theta 1.0   0.25M    87.6M    93.5 +- 14.3 (94.6, 92.4)
  DenseNet-BC-40, k=24, theta 0.5   0.66M   265.7M    94.4 +-  7.2 (94.9, 93.8)
  DenseNet-B-40,  k=24, theta 1.0   0.91M   318.1M    95.1 +-  9.0 (95.8, 94.4)
  ResNet-20                         0.27M    40.3M    98.2 +-  5.4 (97.7, 98.6)

Costs: compression 0.5 saves 28-33% of the parameters and 16-20% of the MACs at each k, and k multiplies both
roughly as k^2, as the architecture implies. Accuracy rises with k at both compressions (92.7 -> 93.9 -> 94.4 and
93.1 -> 93.5 -> 95.1), the paper's direction, but by less than the intervals; compression costs nothing measurable.
The claim itself is not reproduced in this regime: every ResNet-20 seed beats every DenseNet seed, with fewer
MACs than any DenseNet here but k=6 and fewer parameters than k=24. Likely reasons: 300 steps at the study's
learning rate against the paper's 300 epochs, and a 40-layer DenseNet whose three blocks of 6 layers give each
layer few earlier maps to reuse; the paper's comparison is at depth 100-250 on 50,000 images.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  dense = product(model__name=["densenet_bc_100"], model__kwargs__block_sizes=[(6, 6, 6)],
                  model__kwargs__growth_rate=[6, 12, 24], model__kwargs__compression=[0.5, 1.0])
  return dense + [{"model.name": "resnet20"}]
