"""Every registered model honours the registry's uniform interface."""
import pytest

from cnn_flax import models


def test_every_family_is_registered():
  names = set(models.names())
  assert {"lenet5", "lenet5_paper"} <= names


@pytest.mark.parametrize("name", models.names())
def test_every_model_states_its_reference_and_input(name):
  info = models.info(name)
  assert info.reference.strip() and info.input_size >= 32 and info.in_channels in (1, 3)
  model = models.create(name, num_classes=5)
  assert model.num_classes == 5 and hasattr(model, "dtype")
