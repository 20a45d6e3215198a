"""Model zoo. ``create(name, num_classes, **overrides)`` builds a registered model; ``names()`` lists them.

Each family lives in its own module and registers its variants on import; the list below is the whole zoo.
"""
from cnn_flax.models import lenet  # noqa: F401  (registers lenet5, lenet5_paper)
from cnn_flax.models import alexnet  # noqa: F401  (alexnet, alexnet_paper)
from cnn_flax.models import vgg  # noqa: F401  (vgg11/13/16/19[_bn], vgg11_lrn, vgg16_c)
from cnn_flax.models import googlenet  # noqa: F401  (googlenet, googlenet_bn)
from cnn_flax.models import mobilenet  # noqa: F401  (mobilenet_v1)
from cnn_flax.models import resnet  # noqa: F401  (resnet18/34/50/101/152, resnet20/32/44/56/110)
from cnn_flax.models import senet  # noqa: F401  (se_resnet50/101/152)
from cnn_flax.models import densenet  # noqa: F401  (densenet121/161/169/201, densenet_bc_100, densenet40)
from cnn_flax.models.registry import ModelInfo, create, info, names

__all__ = ["ModelInfo", "create", "info", "names"]
