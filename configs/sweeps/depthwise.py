"""Claim: depthwise-separable convolutions make MobileNet cheap for little accuracy (Howard et al. 2017, Table 4).

Paper (ImageNet): a MobileNet of full 3x3 convolutions reaches 71.7% top-1 with 4,866M MACs and 29.3M parameters;
the depthwise-separable MobileNet 70.6% with 569M MACs and 4.2M parameters (1.1 points for 8.6x fewer MACs).

Here: MobileNet v1 (alpha = 1) with each depthwise-separable block (`separable=True`) or one full 3x3 convolution
per block (`separable=False`: 29,294,088 parameters and 4,867M MACs at 224 px, Table 4's), on the study recipe.

  python sweep.py --sweep configs/sweeps/depthwise.py --workdir runs/depthwise --seeds 3

Measured here (2-core CPU): RESULT
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["mobilenet_v1"], model__kwargs__separable=[True, False])
