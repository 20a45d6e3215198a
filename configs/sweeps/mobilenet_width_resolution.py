"""Claim: MobileNet's width multiplier alpha and resolution rho trade accuracy for cost smoothly
(Howard et al. 2017, Tables 6 and 7).

Paper (ImageNet): alpha = 1.0 / 0.75 / 0.5 / 0.25: 70.6 / 68.4 / 63.7 / 50.6% top-1 for 569 / 325 / 149 / 41 M
MACs and 4.2 / 2.6 / 1.3 / 0.5 M parameters; resolution 224 / 192 / 160 / 128: 70.6 / 69.1 / 67.2 / 64.4% for
569 / 418 / 290 / 186 M MACs.

Here: MobileNet v1 with alpha = 1.0, 0.75, 0.5, 0.25 at 32 and 64 px (the digits upsampled; 64 px costs 4x the
MACs of 32 px), on the study recipe.

  python sweep.py --sweep configs/sweeps/mobilenet_width_resolution.py --workdir runs/mobilenet --seeds 3

Measured here: not yet. The study's CPU time in the sessions so far went to the claims ahead of this one in the
README's table; the command above is ready, and the README says which claims were measured.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["mobilenet_v1"], model__kwargs__width_multiplier=[1.0, 0.75, 0.5, 0.25],
                 dataset__image_size=[32, 64])
