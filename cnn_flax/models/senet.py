"""Squeeze-and-excitation ResNets (Hu, Shen, Sun 2018, "Squeeze-and-excitation networks").

``se_resnet50/101/152`` are the ImageNet ResNets of ``resnet.py`` with ``se_ratio=16``: in every bottleneck block
an SE gate (global average pool -> dense C/16 -> ReLU -> dense C -> sigmoid, both dense layers with biases as in
the authors' released models) rescales the residual branch after its last BN, before the identity is added
(paper Fig. 3). Parameter counts: 28,088,024 / 49,326,872 / 66,821,848 for 1000 classes.

Stated deviation: the bottlenecks use the torchvision v1.5 stride placement (stride on the 3x3 conv) like the
rest of the zoo; the authors' Caffe models put the stride on the first 1x1. Pass ``stride_on_3x3=False`` for
their layout (same parameters, ~6% fewer MACs). No copy of ResNet lives here: these are partials of
``resnet.ResNet``, so every ResNet option (``plain``, ``zero_init_last_bn``, ``dtype``...) applies.
"""
from __future__ import annotations

import functools

from cnn_flax.models import registry
from cnn_flax.models.resnet import BottleneckBlock, ResNet

SE_RATIO = 16  # the paper's reduction ratio r (its Table 10 ablation: r=16 balances accuracy and cost)

se_resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock, se_ratio=SE_RATIO)
se_resnet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block=BottleneckBlock, se_ratio=SE_RATIO)
se_resnet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=BottleneckBlock, se_ratio=SE_RATIO)

for _name, _ctor in [("se_resnet50", se_resnet50), ("se_resnet101", se_resnet101),
                     ("se_resnet152", se_resnet152)]:
  registry.register(_name, _ctor, input_size=224,
                    reference="Hu et al. 2018 SE-ResNet (r=16, SE before the add); v1.5 stride placement")
del _name, _ctor
