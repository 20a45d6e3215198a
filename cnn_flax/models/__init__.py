"""Model zoo. ``create(name, num_classes, **overrides)`` builds a registered model; ``names()`` lists them.

Each family lives in its own module and registers its variants on import; the import below is the whole zoo:
lenet (lenet5, lenet5_paper), alexnet (alexnet, alexnet_paper), vgg (vgg11/13/16/19[_bn], vgg11_lrn, vgg16_c),
googlenet (googlenet, googlenet_bn), mobilenet (mobilenet_v1), resnet (resnet18/34/50/101/152,
resnet20/32/44/56/110), senet (se_resnet50/101/152), densenet (densenet121/161/169/201, densenet_bc_100,
densenet40). ``stage_features(model, variables, images)`` returns per-stage feature maps of any of them.
"""
from cnn_flax.models import alexnet, densenet, googlenet, lenet, mobilenet, resnet, senet, vgg  # noqa: F401
from cnn_flax.models.features import stage_features
from cnn_flax.models.registry import ModelInfo, create, info, names

__all__ = ["ModelInfo", "create", "info", "names", "stage_features"]
