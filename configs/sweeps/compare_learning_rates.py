"""The comparison's fairness check: is the shared learning rate what holds the ImageNet-sized networks back?

configs/sweeps/compare_models.py trains every family with one optimizer and schedule (configs/study.py: Nesterov
SGD at 0.05, cosine, 300 steps of batch 32 on 10% of the digits, 32 px). There VGG-16-BN collapses to a constant
output at 0.05 and reaches 97-99% at 0.01, its paper's rate, while ResNet-50, SE-ResNet-50 and GoogLeNet-BN end at
38-87% with seeds 15-40 points apart. This sweep trains those three at 0.05, 0.02 and 0.01, same recipe otherwise.
The 0.05 arm repeats the comparison's runs (same config, same seeds): training on one CPU is deterministic, so its
accuracies must equal the comparison's.

  python sweep.py --sweep configs/sweeps/compare_learning_rates.py --workdir runs/compare_lr --seeds 2

Measured here (2-core CPU, two seeds, 31.5 minutes), final test accuracy %, mean ± 95% interval (seed 0, seed 1):

  learning rate   0.05                      0.02                       0.01
  ResNet-50       46.1 ± 98.4 (53.8, 38.3)  70.0 ± 109 (61.4, 78.6)    90.0 ± 19.7 (91.5, 88.5)
  SE-ResNet-50    78.5 ± 113 (69.6, 87.3)   93.8 ± 3.6 (94.1, 93.5)    94.5 ± 12.5 (93.5, 95.5)
  GoogLeNet-BN    63.4 ± 254 (83.4, 43.4)   92.0 ± 16.1 (90.7, 93.2)   93.2 ± 35.8 (96.1, 90.4)

The 0.05 arm reproduces the comparison's six accuracies exactly. For all three networks every seed at 0.02 or 0.01
lies above every seed at 0.05 (two seeds are too few for the 95% rule to call it, but the ordering holds in each):
the shared rate is what held them back, as it held VGG-16-BN back. At 0.01 they reach 90-95%, close to MobileNet
and LeNet-5 and below ResNet-20, VGG-16-BN and DenseNet-121 (96-98%) in 300 steps. SE-ResNet-50 stays above
ResNet-50 at 0.01 (every seed), the one SE gain of the study, in a regime where neither network has converged.
"""
from cnn_flax.sweeps import product

CONFIG = "configs/study.py"


def get_sweep():
  return product(model__name=["resnet50", "se_resnet50", "googlenet_bn"], optimizer__learning_rate=[0.05, 0.02, 0.01])
