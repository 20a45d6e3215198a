"""Tests for cnn_flax.summary: totals against the published figures, per-layer rows, receptive fields, the CLI.

The MAC and parameter figures are those of /work/shared/REFERENCE.md (published papers / torchvision). A model
that is not registered (yet) is skipped with a reason; one that is registered must match within 1%.
"""
import functools
import math

import jax
import jax.numpy as jnp
import pytest

from cnn_flax import models, summary
from cnn_flax.errors import UserError
from tests.conftest import run_script

G, M = 1e9, 1e6

# (case id, model name, overrides, published MACs, published params or None). Inputs and classes are the
# model_stats defaults: 224x224x3 and 1000 classes, 32x32 and 10 classes for LeNet-5 and the CIFAR nets.
REFERENCE = [
    ("lenet5", "lenet5", {}, 0.417 * M, 61_706),
    ("alexnet", "alexnet", {}, 0.714 * G, 61_100_840),
    ("alexnet_paper", "alexnet_paper", {}, 0.724 * G, 60_965_224),
    ("vgg11", "vgg11", {}, 7.609 * G, 132_863_336),
    ("vgg13", "vgg13", {}, 11.308 * G, 133_047_848),
    ("vgg16", "vgg16", {}, 15.470 * G, 138_357_544),
    ("vgg19", "vgg19", {}, 19.632 * G, 143_667_240),
    ("vgg11_bn", "vgg11_bn", {}, 7.609 * G, 132_868_840),
    ("vgg16_bn", "vgg16_bn", {}, 15.470 * G, 138_365_992),
    ("googlenet", "googlenet", {}, 1.583 * G, 6_998_552),
    ("googlenet_bn", "googlenet_bn", {}, 1.498 * G, 6_624_904),
    ("mobilenet_v1", "mobilenet_v1", {}, 0.569 * G, 4_231_976),
    ("mobilenet_v1_a0.75", "mobilenet_v1", {"width_multiplier": 0.75}, 0.325 * G, None),
    ("mobilenet_v1_a0.5", "mobilenet_v1", {"width_multiplier": 0.5}, 0.149 * G, None),
    ("mobilenet_v1_a0.25", "mobilenet_v1", {"width_multiplier": 0.25}, 0.041 * G, None),
    ("resnet18", "resnet18", {}, 1.814 * G, 11_689_512),
    ("resnet34", "resnet34", {}, 3.664 * G, 21_797_672),
    ("resnet50", "resnet50", {}, 4.089 * G, 25_557_032),
    ("resnet101", "resnet101", {}, 7.801 * G, 44_549_160),
    ("resnet152", "resnet152", {}, 11.514 * G, 60_192_808),
    ("resnet50_v1", "resnet50", {"stride_on_3x3": False}, 3.858 * G, 25_557_032),
    ("densenet121", "densenet121", {}, 2.834 * G, 7_978_856),
    ("densenet169", "densenet169", {}, 3.360 * G, 14_149_480),
    ("densenet201", "densenet201", {}, 4.291 * G, 20_013_928),
    ("densenet161", "densenet161", {}, 7.728 * G, 28_681_000),
    ("se_resnet50", "se_resnet50", {}, 4.092 * G, 28_088_024),
    ("resnet20", "resnet20", {}, 40.6 * M, 269_722),
    ("resnet32", "resnet32", {}, 68.9 * M, 464_154),
    ("resnet44", "resnet44", {}, 97.2 * M, 658_586),
    ("resnet56", "resnet56", {}, 125.5 * M, 853_018),
    ("resnet110", "resnet110", {}, 252.9 * M, 1_727_962),
    ("densenet_bc_100", "densenet_bc_100", {}, 288 * M, 769_162),
    ("densenet40", "densenet40", {}, 265 * M, 1_019_722),
]

# Published rounded parameter counts (REFERENCE.md gives only 2 decimals in millions for these).
ROUNDED_PARAMS = {"mobilenet_v1_a0.75": 2.59 * M, "mobilenet_v1_a0.5": 1.33 * M, "mobilenet_v1_a0.25": 0.47 * M}


def _require(name):
  if name not in models.names():
    pytest.skip(f"model {name!r} is not registered yet")


def _stats(name, overrides=()):
  """model_stats with the defaults, cached: several tests look at the same model."""
  return _cached_stats(name, tuple(overrides))


@functools.lru_cache(maxsize=None)
def _cached_stats(name, overrides):
  return summary.model_stats(name, **dict(overrides))


def _direct_param_count(name, num_classes):
  """Trainable parameters straight from the registry's module, independently of summary.py."""
  info = models.info(name)
  model = models.create(name, num_classes=num_classes)
  x = jax.ShapeDtypeStruct((1, info.input_size, info.input_size, info.in_channels), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(variables["params"]))


def _row(stats, name):
  rows = [r for r in stats["layers"] if r["name"] == name]
  assert len(rows) == 1, f"no single row named {name!r}: {[r['name'] for r in stats['layers']]}"
  return rows[0]


def _last_conv(stats):
  return [r for r in stats["layers"] if r["kind"] == "conv"][-1]


@pytest.mark.parametrize("case,name,overrides,macs,params", REFERENCE, ids=[c[0] for c in REFERENCE])
def test_totals_match_published_figures(case, name, overrides, macs, params):
  _require(name)
  stats = _stats(name, tuple(sorted(overrides.items())))
  assert stats["macs"] == pytest.approx(macs, rel=0.01), f"{case}: {stats['macs']:,} MACs, published {macs:,.0f}"
  if params is not None:
    assert stats["params"] == params
  elif case in ROUNDED_PARAMS:
    assert abs(stats["params"] - ROUNDED_PARAMS[case]) <= 0.005 * M
  # The total is the sum of the rows, and only conv / dense rows carry MACs.
  assert stats["macs"] == sum(r["macs"] for r in stats["layers"])
  assert all(r["macs"] == 0 for r in stats["layers"] if r["kind"] not in ("conv", "dense"))


@pytest.mark.parametrize("name", ["lenet5", "lenet5_paper", "resnet20", "densenet_bc_100", "mobilenet_v1",
                                  "googlenet", "se_resnet50", "vgg16_c"])
def test_params_equal_a_direct_count(name):
  _require(name)
  stats = _stats(name)
  assert stats["params"] == _direct_param_count(name, stats["num_classes"])


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_is_summarised(name):
  stats = _stats(name)
  assert stats["layers"] and stats["macs"] > 0
  required = {"name", "kind", "output_shape", "params", "macs", "receptive_field", "jump"}
  assert all(required <= set(row) for row in stats["layers"])
  assert stats["layers"][-1]["output_shape"] == (stats["num_classes"],)


def test_default_classes_follow_the_registered_input_size():
  assert _stats("lenet5")["num_classes"] == 10
  if "resnet20" in models.names():
    assert _stats("resnet20")["num_classes"] == 10
  if "resnet50" in models.names():
    assert _stats("resnet50")["num_classes"] == 1000
  assert summary.model_stats("lenet5", num_classes=7)["layers"][-1]["output_shape"] == (7,)


def test_lenet5_rows():
  stats = _stats("lenet5")
  rows = stats["layers"]
  assert [r["kind"] for r in rows] == ["conv", "max_pool", "conv", "max_pool", "dense", "dense", "dense"]
  assert [r["output_shape"] for r in rows] == [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (120,), (84,),
                                               (10,)]
  assert [r["params"] for r in rows] == [156, 0, 2416, 0, 48_120, 10_164, 850]
  assert [r["macs"] for r in rows] == [28 * 28 * 25 * 6, 0, 10 * 10 * 25 * 6 * 16, 0, 400 * 120, 120 * 84, 84 * 10]
  # c1 sees 5 pixels, the pool 6, c3 6 + 4*2 = 14, the pool 16; the flattening dense layer sees the whole 5x5 map:
  # 16 + 4*4 = 32, the whole image.
  assert [r["receptive_field"] for r in rows] == [5, 6, 14, 16, 32, 32, 32]
  assert [r["jump"] for r in rows[:4]] == [1, 2, 2, 4]
  assert stats["input_shape"] == (32, 32, 1)
  assert stats["non_trainable"] == 0 and stats["train_only_params"] == 0


def test_raw_lax_convolution_is_a_row():
  """lenet5_paper's C3 is a lax conv on a kernel scattered from its packed weights, not an nn.Conv."""
  stats = _stats("lenet5_paper")
  c3 = _row(stats, "c3")
  assert c3["kind"] == "conv" and c3["params"] == 1_516  # the paper's C3 count
  assert c3["macs"] == 10 * 10 * 5 * 5 * 6 * 16  # as computed: the full (masked) kernel
  assert c3["receptive_field"] == 14
  assert [r["name"] for r in stats["layers"]] == ["c1", "s2/avg_pool_0", "c3", "s4/avg_pool_0", "c5", "f6", "output"]


def test_adaptive_pool_widens_the_field_once():
  _require("vgg16")
  stats = summary.model_stats("vgg16", image_size=160)  # 5x5 after pool5: the adaptive pool to 7x7 is not an identity
  assert _row(stats, "max_pool_4")["receptive_field"] == 212
  assert _row(stats, "fc6")["receptive_field"] == 212 + 4 * 32
  assert [r["kind"] for r in stats["layers"]].count("dense") == 3


def test_input_size_and_channels_can_be_overridden():
  stats = summary.model_stats("lenet5", image_size=36, in_channels=3)
  assert stats["layers"][0]["output_shape"] == (32, 32, 6)
  assert stats["layers"][0]["params"] == 5 * 5 * 3 * 6 + 6


def test_receptive_fields_of_known_networks():
  """Published conv-tower receptive fields: VGG-16 conv5_3 196, AlexNet conv5 163, ResNet-50 (v1.5) 427."""
  for name, rf in [("vgg16", 196), ("alexnet", 163), ("resnet50", 427)]:
    _require(name)
    assert _last_conv(_stats(name))["receptive_field"] == rf, name


def test_receptive_field_takes_the_largest_path_at_merges():
  _require("resnet50")
  stats = _stats("resnet50")
  # The projection shortcut sees only the block input (the max-pool output: 11); the residual branch grows to 19.
  assert _row(stats, "layer1_0/downsample/conv")["receptive_field"] == 11
  assert _row(stats, "layer1_0/conv_bn3/conv")["receptive_field"] == 19
  # After the add, the next block starts from the larger of the two.
  assert _row(stats, "layer1_1/conv_bn1/conv")["receptive_field"] == 19
  _require("googlenet")
  stats = _stats("googlenet")
  # Inception 3a's input has r=27, j=8; its 5x5 branch reaches 27 + 4*8 = 59, the concat takes the largest.
  assert _row(stats, "inception3a/branch3/unit/conv")["receptive_field"] == 59
  assert _row(stats, "inception3a/branch1/unit/conv")["receptive_field"] == 27
  assert _row(stats, "inception3b/branch1/unit/conv")["receptive_field"] == 59


def test_squeeze_excitation_gates_do_not_extend_the_conv_path():
  """The documented simplification: SE-ResNet's convs have ResNet's receptive fields."""
  _require("se_resnet50")
  se, plain = _stats("se_resnet50"), _stats("resnet50")
  assert _last_conv(se)["receptive_field"] == _last_conv(plain)["receptive_field"]
  assert any(r["kind"] == "global_avg_pool" and r["name"].endswith("se/global_avg_pool_0") for r in se["layers"])


def test_googlenet_counts_the_inference_graph():
  _require("googlenet")
  stats = _stats("googlenet")
  assert not any(r["name"].startswith("aux") for r in stats["layers"])
  assert stats["params"] + stats["train_only_params"] == 13_378_280  # with both aux heads, REFERENCE.md


def test_unknown_model_is_a_user_error():
  with pytest.raises(UserError, match="unknown model"):
    summary.model_stats("no_such_net")


def test_cli_prints_the_table_and_totals():
  result = run_script("-m", "cnn_flax.summary", "--model", "lenet5", timeout=120)
  assert result.returncode == 0, result.stderr
  assert "Total params: 61,706" in result.stdout
  assert "Total MACs: 0.417 M" in result.stdout
  assert "max_pool_1" in result.stdout and "c3" in result.stdout


def test_cli_unknown_model_exits_2_with_one_line():
  result = run_script("-m", "cnn_flax.summary", "--model", "no_such_net", timeout=120)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: unknown model 'no_such_net'"), result.stderr


def test_cli_overrides(capsys):
  _require("mobilenet_v1")
  summary.main(["--model", "mobilenet_v1", "--override", "width_multiplier=0.5"])
  assert "Total MACs: 149.497 M" in capsys.readouterr().out
  with pytest.raises(SystemExit) as exit_info:
    summary.main(["--model", "mobilenet_v1", "--override", "width_multiplier"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.startswith("error: --override expects KEY=VALUE")
