"""Claim: depthwise-separable convolutions make MobileNet cheap for little accuracy (Howard et al. 2017, Table 4).

Paper (ImageNet): a MobileNet of full 3x3 convolutions reaches 71.7% top-1 with 4,866M MACs and 29.3M parameters;
the depthwise-separable MobileNet 70.6% with 569M MACs and 4.2M parameters (1.1 points for 8.6x fewer MACs).

Here: MobileNet v1 (alpha = 1) with each depthwise-separable block (`separable=True`) or one full 3x3 convolution
per block (`separable=False`: 29,294,088 parameters and 4,867M MACs at 224 px, Table 4's), on the study recipe.

  python sweep.py --sweep configs/sweeps/depthwise.py --workdir runs/depthwise --seeds 2

Measured here (2-core CPU, 2 seeds, about 5 minutes: 40 s a separable run, 2-3 min a full one), at 32 px:
  separable     3,216,650 parameters, 11.4M MACs, 94.9 / 92.4% (mean 93.7%), about 340 training images/s
  full 3x3     28,278,762 parameters, 99.2M MACs, 46.2 / 55.2% (mean 50.7%), about 80 training images/s
The cost side is reproduced exactly (8.8x the parameters, 8.7x the MACs, Table 4's 7x / 8.6x at 224 px). The
accuracy side is not the paper's: with 144 training images and 300 steps the 28M-parameter full network is far
from converged (its eval accuracy still rising), so here separable convolutions are the better network, not a
1-point loss. Every separable seed beat every full seed, but two seeds give intervals too wide (+-16 and +-57
points) to call it by the 95% rule.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["mobilenet_v1"], model__kwargs__separable=[True, False])
