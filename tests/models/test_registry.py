"""Every registered model honours the registry's uniform interface."""
import pytest

from cnn_flax import models
from tests.models.model_testing import batch_norm_settings


def test_every_family_is_registered():
  names = set(models.names())
  assert {"lenet5", "lenet5_paper"} <= names


@pytest.mark.parametrize("name", models.names())
def test_every_model_states_its_reference_and_input(name):
  info = models.info(name)
  assert info.reference.strip() and info.input_size >= 32 and info.in_channels in (1, 3)
  model = models.create(name, num_classes=5)
  assert model.num_classes == 5 and hasattr(model, "dtype")


# One model per family with BatchNorm, at a small input (tracing only): the default is each family's reference
# value (torchvision's GoogLeNet 1e-3, 1e-5 elsewhere), and the field reaches every BatchNorm, blocks included.
@pytest.mark.parametrize("name, size, default", [
    ("vgg11_bn", 32, 1e-5), ("googlenet_bn", 64, 1e-3), ("mobilenet_v1", 32, 1e-5), ("resnet18", 32, 1e-5),
    ("resnet50", 32, 1e-5), ("resnet20", 32, 1e-5), ("se_resnet50", 32, 1e-5), ("densenet121", 32, 1e-5),
    ("densenet40", 32, 1e-5),
])
def test_bn_epsilon_field_sets_every_batchnorm(name, size, default):
  model = models.create(name, num_classes=5)
  assert model.bn_epsilon == default
  assert {eps for _, eps, _ in batch_norm_settings(model, size, train=False)} == {default}
  changed = models.create(name, num_classes=5, bn_epsilon=3e-4)
  assert {eps for _, eps, _ in batch_norm_settings(changed, size, train=False)} == {3e-4}
