"""Claim: at the same depth, 3x3 convolutions beat 1x1 ones: spatial context matters beyond the extra
non-linearity (Simonyan & Zisserman 2015, sec. 4.1, Table 3).

Paper (ImageNet, test scale 256): configuration C (a 1x1 convolution as the third layer of stages 3-5) 28.1 / 9.4%
top-1 / top-5 error against D (3x3 there) 27.0 / 8.8%; C is better than B (which lacks the extra layers), so the
non-linearity helps too.

Here: C (vgg16_c) against D (vgg16), both with BatchNorm after every convolution (`batch_norm=True`; the paper's
BN-free nets stay at chance in CPU-sized runs, see configs/sweeps/lrn.py) and a 256-wide classifier, on the study
recipe (configs/study.py: 10% of the digits, 300 steps, 32 px).

  python sweep.py --sweep configs/sweeps/vgg_1x1.py --workdir runs/vgg_1x1 --seeds 1

Measured here (2-core CPU, one seed, 13 minutes with other jobs on the machine): both networks collapse
to a constant output within the first 100 steps (training loss 2.303 = ln 10 from then on, test accuracy 10.1%,
chance), as VGG-16-BN does in the model comparison. So the claim is not testable on the study recipe: its shared
learning rate (0.05 with Nesterov momentum, no warm-up) is too high for these 16-layer networks from scratch. The
`:digits` preset of configs/vgg16.py trains VGG-16 to 97.75% at 0.02; rerun with `--set
optimizer.learning_rate=0.01` (an untested suggestion) or on CIFAR-10 with a GPU.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["vgg16_c", "vgg16"], model__kwargs__batch_norm=[True],
                 model__kwargs__classifier_width=[256],
                 optimizer__learning_rate=[0.01])
