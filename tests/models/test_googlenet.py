"""GoogLeNet: published counts with and without aux heads, aux heads only in training, structure, shapes,
one real forward+backward of an Inception module and an aux head."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax import models
from cnn_flax.models import googlenet as googlenet_lib
from tests.models.model_testing import (
  RNGS,
  abstract_variables,
  count_params,
  host_variables,
  init_apply_dtypes,
  lrn_calls,
  run_compiled,
)


@functools.lru_cache(maxsize=None)
def registered_variables(name, train):
  """Abstract variables of a registered model (1000 classes, 224 px); tracing GoogLeNet takes ~1 s, so cached."""
  return abstract_variables(models.create(name, num_classes=1000), 224, train=train)


@pytest.mark.parametrize("name,train,expected", [
    ("googlenet", False, 6_998_552),
    ("googlenet", True, 13_378_280),  # with both aux heads
    ("googlenet_bn", False, 6_624_904),
    ("googlenet_bn", True, 13_004_888),
])
def test_param_count_matches_published(name, train, expected):
  assert count_params(registered_variables(name, train)["params"]) == expected


@pytest.mark.parametrize("name", ["googlenet", "googlenet_bn"])
def test_aux_heads_present_in_training_absent_at_inference(name):
  model = models.create(name, num_classes=1000)
  assert {"aux1", "aux2"} <= set(registered_variables(name, True)["params"])
  assert not {"aux1", "aux2"} & set(registered_variables(name, False)["params"])
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = registered_variables(name, True)

  def apply(train):
    return jax.eval_shape(lambda v, x: model.apply(v, x, train=train, rngs=RNGS, mutable=["batch_stats"])[0],
                          variables, x)

  train_out = apply(True)
  assert set(train_out) == {"logits", "aux_logits"}
  assert train_out["logits"].shape == (2, 1000)
  assert [a.shape for a in train_out["aux_logits"]] == [(2, 1000), (2, 1000)]
  eval_out = apply(False)  # training variables work at inference; the aux parameters are simply unused
  assert not isinstance(eval_out, dict) and eval_out.shape == (2, 1000)


def test_aux_logits_false_gives_plain_logits_in_training():
  model = models.create("googlenet", num_classes=10, aux_logits=False)
  variables = abstract_variables(model, 224, train=True)
  assert count_params(variables["params"]) == 6_998_552 - 1000 * 1024 - 1000 + 10 * 1024 + 10
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, rngs=RNGS), variables,
                       jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32))
  assert out.shape == (2, 10)


def _record_inputs(model, size, train):
  shapes = {}

  def record(next_fun, args, kwargs, context):
    if (context.method_name == "__call__" and context.module.name
        and isinstance(context.module.parent, googlenet_lib.GoogLeNet)):
      shapes[context.module.name] = args[0].shape[1:]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    variables = abstract_variables(model, size, train=train)
  return shapes, variables


@pytest.mark.parametrize("name", ["googlenet", "googlenet_bn"])
def test_feature_map_sizes_and_aux_positions_at_224(name):
  model = models.create(name, num_classes=1000)
  shapes, variables = _record_inputs(model, 224, train=True)
  assert shapes["inception3a"] == (28, 28, 192)
  assert shapes["inception4a"] == (14, 14, 480)
  assert shapes["aux1"] == (14, 14, 512)  # output of 4a
  assert shapes["aux2"] == (14, 14, 528)  # output of 4d
  assert shapes["inception5a"] == (7, 7, 832)
  assert shapes["fc"] == (1024,)
  aux = variables["params"]["aux1"]
  assert aux["fc1"]["kernel"].shape == (4 * 4 * 128, 1024)  # 5x5/3 pooling: 14x14 -> 4x4
  assert aux["fc2"]["kernel"].shape == (1024, 1000)


def test_paper_vs_torchvision_structure():
  paper = registered_variables("googlenet", False)["params"]
  tv = registered_variables("googlenet_bn", False)["params"]
  assert paper["inception3a"]["branch3"]["unit"]["conv"]["kernel"].shape == (5, 5, 16, 32)
  assert tv["inception3a"]["branch3"]["unit"]["conv"]["kernel"].shape == (3, 3, 16, 32)
  assert "bias" in paper["conv1"]["unit"]["conv"] and "bn" not in paper["conv1"]["unit"]
  assert "bias" not in tv["conv1"]["unit"]["conv"] and "bn" in tv["conv1"]["unit"]
  assert lrn_calls(models.create("googlenet", 1000), 224) == ["lrn1", "lrn2"]
  assert lrn_calls(models.create("googlenet_bn", 1000), 224) == []  # torchvision: BN instead of LRN


@pytest.mark.parametrize("name,size,train", [("googlenet", 224, False), ("googlenet", 160, True),
                                             ("googlenet_bn", 32, True), ("googlenet_bn", 300, False)])
def test_output_shape_at_several_resolutions(name, size, train):
  model = models.create(name, num_classes=7)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  out = jax.eval_shape(lambda x: model.apply(model.init(RNGS, x, train=train), x, train=train, rngs=RNGS,
                                             mutable=["batch_stats"])[0], x)
  logits = out["logits"] if train else out
  assert logits.shape == (2, 7)
  if train:
    assert [a.shape for a in out["aux_logits"]] == [(2, 7), (2, 7)]


def test_se_ratio_adds_se_to_every_inception_module():
  plain = registered_variables("googlenet_bn", False)["params"]
  se = abstract_variables(models.create("googlenet_bn", 1000, se_ratio=16), 224)["params"]
  added = 0
  for name, (c1, _, c3, _, c5, cp) in googlenet_lib.INCEPTION.items():
    c = c1 + c3 + c5 + cp
    assert "se" in se[f"inception{name}"] and "se" not in plain[f"inception{name}"]
    added += c * (c // 16) + c // 16 + (c // 16) * c + c
  assert count_params(se) - count_params(plain) == added


def _ceil_pool_reference(x, window, stride):
  n, h, w, c = x.shape
  out_h = -(-(h - window) // stride) + 1
  out_w = -(-(w - window) // stride) + 1
  y = np.empty((n, out_h, out_w, c), x.dtype)
  for i in range(out_h):
    for j in range(out_w):
      y[:, i, j] = x[:, i * stride:i * stride + window, j * stride:j * stride + window].max(axis=(1, 2))
  return y


@pytest.mark.parametrize("size,window", [(112, 3), (14, 3), (14, 2), (7, 3), (6, 3)])
def test_max_pool_ceil_matches_caffe_rounding(size, window):
  x = np.random.default_rng(size).normal(size=(1, size, size, 2)).astype(np.float32) - 5.0  # all negative
  y = googlenet_lib.max_pool_ceil(jnp.asarray(x), window, 2)
  assert y.shape[1] == -(-(size - window) // 2) + 1
  np.testing.assert_array_equal(y, _ceil_pool_reference(x, window, 2))


class _InceptionWithAux(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = googlenet_lib.Inception((4, 4, 8, 2, 4, 4), branch3_kernel=5, se_ratio=4, name="inception")(x, train)
    aux = googlenet_lib.InceptionAux(3, name="aux")(x, train)
    return jnp.mean(x, axis=(1, 2))[:, :3] + aux


def test_forward_backward_inception_and_aux():
  model = _InceptionWithAux()
  x = jax.random.normal(jax.random.key(3), (2, 14, 14, 6))

  def run(params, x):
    def loss(params):
      out = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(4, impl="rbg")})
      return jnp.sum(out ** 2)

    return jax.value_and_grad(loss)(params)

  value, grads = run_compiled(run, host_variables(model, x)["params"], x)
  assert np.isfinite(value)
  assert grads["inception"]["branch3"]["unit"]["conv"]["kernel"].shape == (5, 5, 2, 4)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.abs(np.asarray(g)).max() > 0, path  # every parameter gets a gradient (checked on the host)


@pytest.mark.parametrize("name", ["googlenet", "googlenet_bn"])
def test_bfloat16_compute_keeps_float32_params(name):
  model = models.create(name, num_classes=10, dtype=jnp.bfloat16)
  param_dtypes, out_dtypes = init_apply_dtypes(model, 64, train=True)
  assert param_dtypes == {jnp.dtype(jnp.float32)}
  assert out_dtypes == {jnp.dtype(jnp.bfloat16)}
