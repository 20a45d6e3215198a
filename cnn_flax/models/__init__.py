"""Model zoo. ``create(name, num_classes, **overrides)`` builds a registered model; ``names()`` lists them.

Each family lives in its own module and registers its variants on import; the list below is the whole zoo.
"""
from cnn_flax.models import lenet  # noqa: F401  (registers lenet5, lenet5_paper)
from cnn_flax.models.registry import ModelInfo, create, info, names

__all__ = ["ModelInfo", "create", "info", "names"]
