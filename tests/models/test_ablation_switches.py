"""The model switches the study's ablations use: each changes the architecture as its paper describes, and the
parameter count follows from the architecture (computed here from the layer widths, not read off the model)."""
import jax
import jax.numpy as jnp
import numpy as np

from cnn_flax import models, summary
from cnn_flax.models import googlenet, vgg
from tests.models.model_testing import abstract_variables, count_params, host_variables, train_and_eval


def _params(name, size=224, **overrides):
  return count_params(abstract_variables(models.create(name, num_classes=1000, **overrides), size)["params"])


def test_naive_inception_modules_carry_their_input_through():
  # Fig. 2(a): 1x1, 3x3 and 5x5 convolutions of the input itself, and its max-pool unprojected.
  expected = 7 * 7 * 3 * 64 + 64 + 64 * 64 + 64 + 9 * 64 * 192 + 192  # conv1, conv2_reduce, conv2
  channels = 192
  for name in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
    c1, _, c3, _, c5, _ = googlenet.INCEPTION[name]
    expected += c1 * (channels + 1) + c3 * (9 * channels + 1) + c5 * (25 * channels + 1)
    channels += c1 + c3 + c5  # the pooled input passes through
  expected += channels * 1000 + 1000
  assert channels == 4944
  assert _params("googlenet", inception_reductions=False) == expected == 97_526_008
  assert _params("googlenet") == 6_998_552  # the paper's module: 14x fewer parameters
  naive = summary.model_stats("googlenet", inception_reductions=False)
  assert naive["macs"] > 7 * summary.model_stats("googlenet")["macs"]  # 12.57 G against 1.58 G


def test_large_kernels_give_each_stack_of_3x3_one_conv_of_the_same_receptive_field():
  assert vgg.one_large_kernel(((64, 3), (64, 3))) == ((64, 5),)
  assert vgg.one_large_kernel(((256, 3), (256, 3), (256, 3))) == ((256, 7),)
  assert vgg.one_large_kernel(((256, 3), (256, 3), (256, 1))) == ((256, 5), (256, 1))  # config C keeps its 1x1
  # B with 5x5 convs: 3->64, 64->128, 128->256, 256->512, 512->512, then the classifier.
  widths = [(3, 64), (64, 128), (128, 256), (256, 512), (512, 512)]
  convs = sum(25 * cin * cout + cout for cin, cout in widths)
  classifier = 7 * 7 * 512 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
  assert _params("vgg13", large_kernels=True) == convs + classifier == 134_503_528
  for name in ("vgg13", "vgg16"):  # the receptive field is the point: unchanged
    plain, large = summary.model_stats(name), summary.model_stats(name, large_kernels=True)
    assert plain["receptive_field"] == large["receptive_field"]
    assert len([r for r in large["layers"] if r["kind"] == "conv"]) == 5


def test_full_convolution_mobilenet_matches_table_4():
  stats = summary.model_stats("mobilenet_v1", separable=False)
  assert stats["params"] == 29_294_088  # Howard et al. Table 4: 29.3M
  assert round(stats["macs"] / 1e6) == 4867  # Table 4: 4866M (one conv row rounds differently)
  assert summary.model_stats("mobilenet_v1")["params"] == 4_231_976


def test_the_switched_models_train():
  for name, overrides, size in (("googlenet_bn", {"inception_reductions": False, "aux_logits": False}, 32),
                                ("vgg11_bn", {"large_kernels": True, "classifier_width": 16}, 32),
                                ("mobilenet_v1", {"separable": False, "width_multiplier": 0.25, "se_ratio": 4}, 32)):
    model = models.create(name, num_classes=10, **overrides)
    x = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
    variables = host_variables(model, x, train=True)
    loss, grads, _, logits = train_and_eval(model, variables, x, 3)
    assert np.isfinite(float(loss)) and logits.shape == (2, 10)
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads)), name


def test_alexnet_without_response_normalisation():
  from tests.models.model_testing import lrn_calls
  assert lrn_calls(models.create("alexnet_paper", num_classes=1000), 227) == ["lrn1", "lrn2"]
  assert lrn_calls(models.create("alexnet_paper", num_classes=1000, lrn=False), 227) == []
  assert _params("alexnet_paper", 227, lrn=False) == _params("alexnet_paper", 227) == 60_965_224  # LRN has none
