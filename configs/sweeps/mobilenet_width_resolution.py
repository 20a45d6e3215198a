"""Claim: MobileNet's width multiplier alpha and resolution rho trade accuracy for cost smoothly
(Howard et al. 2017, Tables 6 and 7).

Paper (ImageNet): alpha = 1.0 / 0.75 / 0.5 / 0.25: 70.6 / 68.4 / 63.7 / 50.6% top-1 for 569 / 325 / 149 / 41 M
MACs and 4.2 / 2.6 / 1.3 / 0.5 M parameters; resolution 224 / 192 / 160 / 128: 70.6 / 69.1 / 67.2 / 64.4% for
569 / 418 / 290 / 186 M MACs.

Here: MobileNet v1 with alpha = 1.0, 0.75, 0.5, 0.25 at 32 and 64 px (the digits upsampled; 64 px costs 4x the
MACs of 32 px), on the study recipe.

  python sweep.py --sweep configs/sweeps/mobilenet_width_resolution.py --workdir runs/mobilenet --seeds 3

Measured here (2-core CPU, three seeds, 25.8 minutes; test accuracy %, mean +- 95% interval):

  alpha   params   MACs 32 px / 64 px   32 px           64 px
  1.0     3.22M    11.4M / 45.8M        94.1 +- 3.6     95.2 +- 0.7
  0.75    1.82M     6.5M / 26.1M        93.9 +- 6.0     94.8 +- 0.4
  0.5     0.82M     3.0M / 11.9M        94.0 +- 1.1     93.4 +- 3.6
  0.25    0.22M     0.8M /  3.2M        91.3 +- 3.2     91.8 +- 2.8

Costs follow the paper exactly: MACs fall as alpha^2 (1 : 0.57 : 0.26 : 0.07, the paper's 569 : 325 : 149 : 41)
and rise 4x from 32 to 64 px. Accuracy moves in the paper's direction (alpha = 0.25 is the lowest at both sizes,
and at 64 px accuracy falls with every step of alpha), but the steps are 0.1-3.4 points against intervals of 0.4-6
points: only 64 px alpha = 1.0 against 0.25 (95.2 +- 0.7 against 91.8 +- 2.8) comes near separating, and even there
the intervals touch. With 144 training images, a quarter-width MobileNet (0.22M parameters) comes within 3-4 points of
the full one: the data, more than the capacity, limits these runs.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["mobilenet_v1"], model__kwargs__width_multiplier=[1.0, 0.75, 0.5, 0.25],
                 dataset__image_size=[32, 64])
