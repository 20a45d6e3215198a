"""Per-stage feature maps for every family, and that they are the maps the classifier really uses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import models


@pytest.mark.parametrize("name, size, expected", [
    ("resnet18", 64, [(32, 32, 64), (16, 16, 64), (8, 8, 128), (4, 4, 256), (2, 2, 512)]),
    ("vgg11", 64, [(64, 64, 64), (32, 32, 128), (16, 16, 256), (8, 8, 512), (4, 4, 512)]),
    ("googlenet", 96, [(48, 48, 64), (24, 24, 192), (12, 12, 480), (6, 6, 832), (3, 3, 1024)]),
    ("densenet121", 64, [(32, 32, 64), (16, 16, 256), (8, 8, 512), (4, 4, 1024), (2, 2, 1024)]),
    ("mobilenet_v1", 64, [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512), (2, 2, 1024)]),
    ("alexnet", 96, [(23, 23, 64), (11, 11, 192), (5, 5, 256)]),
])
def test_stage_shapes(name, size, expected):
  model = models.create(name, num_classes=10)
  x = jnp.zeros((1, size, size, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  features = jax.eval_shape(lambda v: models.stage_features(model, v, x), variables)
  assert [f.shape[1:] for f in features] == expected


def test_last_stage_is_what_the_classifier_pools():
  model = models.create("resnet20", num_classes=10)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init(jax.random.key(1), x, train=False)
  features = models.stage_features(model, variables, x)
  assert [f.shape[1:] for f in features] == [(32, 32, 16), (16, 16, 32), (8, 8, 64)]
  fc = variables["params"]["fc"]
  logits = features[-1].mean((1, 2)) @ fc["kernel"] + fc["bias"]
  np.testing.assert_allclose(logits, model.apply(variables, x, train=False), rtol=1e-4, atol=1e-5)
