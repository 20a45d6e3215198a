"""The eight families side by side: one representative of each (and the variants worth showing), trained under
one fixed budget on one dataset, with what each costs (the chart of Canziani et al. 2016).

Every model trains on the study recipe (configs/study.py: 10% of the bundled digits, 300 steps of batch 32, the
same optimizer and schedule for all) at 32x32, except AlexNet at 64x64, the smallest input its unpadded stride-4
stem and three max-pools accept. ImageNet-shaped networks (AlexNet, VGG-16 with BatchNorm, GoogLeNet with
BatchNorm, MobileNet v1, ResNet-50, DenseNet-121, SE-ResNet-50) run at those small sizes as they are, so their
convolutions' MACs are the paper figures scaled by (32/224)^2; ResNet-20 is the CIFAR paper's own network. (The
CIFAR DenseNet-BC-100 trains at 14 images/s here, 11 minutes a run: configs/sweeps/densenet_growth.py covers the
CIFAR DenseNets with a shallower BC-40.)
The report adds, per model, training and inference images/s, peak memory and compile time measured by
cnn_flax.benchmark (the real jitted step, batch 32, in a fresh process), and accuracy_vs_macs.png is the bubble
chart (area: parameters; the Pareto front dashed).

  python sweep.py --sweep configs/sweeps/compare_models.py --workdir runs/compare --seeds 2   # --seeds 3: narrower
  # on CIFAR-10, once prepared:   --config configs/study.py:cifar10 --workdir runs/compare_cifar10
  # on ImageNet with a GPU/TPU:   --config configs/resnet50.py --set num_epochs=90 (each family's paper recipe
  #                               is its own config; see the README, "Sweeps and the study")

Measured here (2-core CPU, two seeds, 52 minutes: 30.7 for seed 0 with the benchmarks, 21.5 for seed 1), final test
accuracy, mean ± 95% interval (seed 0, seed 1): ResNet-20 98.2 ± 5.4 (97.7, 98.6), VGG-16-BN at learning rate 0.01
98.0 ± 10.7 (97.2, 98.9), DenseNet-121 96.1 ± 10.7 (96.9, 95.2), LeNet-5 95.5 ± 0.0 (95.5, 95.5), MobileNet v1
93.7 ± 16.1 (94.9, 92.4); SE-ResNet-50 78.5 ± 113 (69.6, 87.3), GoogLeNet-BN 63.4 ± 254 (83.4, 43.4), ResNet-50
46.1 ± 98.4 (53.8, 38.3); AlexNet 16.3 ± 78.7 (22.5, 10.1), VGG-16-BN at the shared 0.05 10.1 ± 0.0 (a constant
output within 50 steps in both seeds). Every seed of each of these three groups lies above every seed of the next:
in 300 steps on 144 images the compact networks win and the ImageNet-sized ones are still far from converged;
at 0.01 VGG recovers, and so do ResNet-50, SE-ResNet-50 and GoogLeNet-BN (90-95%,
configs/sweeps/compare_learning_rates.py): the shared rate holds the large networks back. The README's table has
every model's costs.
"""
CONFIG = "configs/study.py"
BENCHMARK = {"batch_size": 32, "steps": 5, "warmup": 1}

MODELS = [  # (registered name, input size, module fields)
    ("lenet5", 32, {}),
    ("alexnet", 64, {}),
    # VGG's 4096-wide classifier on a 7x7 map (the adaptive pool repeats the 1x1 map of a 32 px input) holds 119M of
    # its 134M weights and makes every step an update of them: a 512-wide classifier keeps the convolutions whole.
    ("vgg16_bn", 32, {"classifier_width": 512}),
    ("googlenet_bn", 32, {}),
    ("mobilenet_v1", 32, {}),
    ("resnet20", 32, {}),
    ("resnet50", 32, {}),
    ("densenet121", 32, {}),
    ("se_resnet50", 32, {}),
]
# The shared learning rate (0.05) is too high for VGG-16-BN from scratch: it collapses to a constant output within
# 50 steps. The same network at 0.01, the rate of the paper and torchvision, is shown beside it.
VARIANTS = [{"model.name": "vgg16_bn", "dataset.image_size": 32, "model.kwargs.classifier_width": 512,
             "optimizer.learning_rate": 0.01}]


def get_sweep():
  return [{"model.name": name, "dataset.image_size": size, **{f"model.kwargs.{k}": v for k, v in fields.items()}}
          for name, size, fields in MODELS] + VARIANTS
