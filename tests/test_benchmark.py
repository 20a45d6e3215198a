"""The throughput benchmark: it times the real step and reports what the contract names (benchmarks/throughput.py)."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import peers
from cnn_flax import benchmark, models, summary
from tests.conftest import run_script

CONTRACT = ("model", "mode", "batch_size", "image_size", "dtype", "devices", "images_per_sec", "step_ms", "compile_s",
            "peak_memory_mb")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_measure_reports_the_contracts_fields(mode):
  result = benchmark.measure("lenet5", batch_size=8, steps=3, warmup=1, mode=mode)
  assert set(CONTRACT) <= set(result)
  assert (result["model"], result["mode"], result["batch_size"], result["image_size"], result["dtype"]) == (
      "lenet5", mode, 8, 32, "float32")
  assert result["images_per_sec"] == pytest.approx(8 * 1000 / result["step_ms"], rel=1e-3)
  assert result["compile_s"] > 0 and result["peak_memory_mb"] > 0 and result["memory_source"] == "xla_estimate"
  assert result["init_s"] > 0 and result["compile_s"] >= result["lower_s"] > 0
  macs = summary.model_stats("lenet5")["macs"]
  assert result["model_gflops_per_image"] == pytest.approx(2 * macs * (3 if mode == "train" else 1) / 1e9, rel=1e-3)
  assert result["mfu"] is None  # no published peak for a CPU


def test_model_fields_reach_the_timed_model():
  plain = benchmark.measure("mobilenet_v1", batch_size=2, image_size=32, steps=1, warmup=0)
  narrow = benchmark.measure("mobilenet_v1", batch_size=2, image_size=32, steps=1, warmup=0,
                             overrides={"width_multiplier": 0.25})
  assert narrow["model_gflops_per_image"] < plain["model_gflops_per_image"] / 4


def test_the_command_line_ends_with_one_json_line():
  result = run_script("benchmarks/throughput.py", "--model", "lenet5", "--batch_size", "4", "--steps", "2",
                      "--peer", "torch")
  assert result.returncode == 0, result.stderr
  row = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(CONTRACT) <= set(row) and row["process_s"] >= row["compile_s"]
  assert "images_per_sec" in row["peer_torch"] or "skipped" in row["peer_torch"]  # torch is optional


@pytest.mark.parametrize("model", sorted(peers.BUILT_HERE))
def test_the_torch_peers_built_here_are_the_same_size_as_ours(model):
  """torchvision has neither MobileNet v1 nor the CIFAR DenseNet-BC: benchmarks/peers.py builds them, and a ratio
  against them means something only if they are the same networks (parameter count, classes)."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("torchvision")
  net = peers.BUILT_HERE[model]()
  info = models.info(model)
  classes = summary.default_num_classes(info)  # what benchmark.measure times: 10 for the 32 px models
  assert sum(p.numel() for p in net.parameters()) == summary.model_stats(model, num_classes=classes)["params"]
  assert net.eval()(torch.zeros(1, 3, info.input_size, info.input_size)).shape == (1, classes)


def test_the_scanned_resnet_of_the_scan_experiment_is_the_same_network():
  """benchmarks/scan_blocks.py compares a scanned ResNet with the registered one; the comparison means something
  only if the scanned variant has the same variables and computes the same outputs and statistics."""
  import jax
  import numpy as np

  from benchmarks import scan_blocks
  from cnn_flax import models
  model = models.create("resnet20", num_classes=10)
  scanned = scan_blocks.scanned(model)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, False)
  assert jax.tree.structure(scanned.init(jax.random.key(0), x, False)) == jax.tree.structure(variables)
  for train in (True, False):
    mutable = ["batch_stats"] if train else False
    expected = model.apply(variables, x, train, mutable=mutable)
    got = scanned.apply(variables, x, train, mutable=mutable)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  jaxpr = str(jax.make_jaxpr(lambda v: scanned.apply(v, x, False))(variables))
  assert jaxpr.count("scan[") == 3  # one per stage: blocks 1 and 2 of each of the three


def test_the_scan_experiment_runs_as_documented():
  result = run_script("benchmarks/scan_blocks.py", "--model", "resnet20", "--image_size", "8", "--batch_size", "2",
                      "--steps", "1")
  assert result.returncode == 0, result.stderr
  rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
  assert [r["variant"] for r in rows] == ["unrolled", "scanned"] and rows[1]["max_abs_difference"] < 1e-4


def test_the_step_profile_names_every_timed_operation(tmp_path):
  """benchmarks/step_profile.py: measure(trace_dir=...) leaves a trace of the timed steps and the compiled step's
  HLO; every operation in the trace gets a group, and LeNet-5's training step has convolutions of all three kinds."""
  import gzip

  from benchmarks import step_profile
  from cnn_flax.models import onednn
  benchmark.measure("lenet5", batch_size=4, steps=1, warmup=0, trace_dir=str(tmp_path))
  groups = step_profile.fusion_groups((tmp_path / "step.hlo.txt").read_text())
  kernel_gradients = "convolutions: kernel gradients (oneDNN)" if onednn.available() else \
      "convolutions: kernel gradients (XLA's)"
  assert {"convolutions: forward", "convolutions: input gradients", kernel_gradients,
          "matrix products"} <= set(groups.values())
  traces = list(tmp_path.rglob("*.trace.json.gz"))
  assert len(traces) == 1
  events = json.load(gzip.open(traces[0]))["traceEvents"]
  assert any(e.get("ph") == "X" and e.get("name") in groups for e in events)  # the steps' operations were traced
  batch_norm = '  %ffi_call.7 = (f32[2,4]) custom-call(f32[2,4] %x), custom_call_target="CnnFlaxBatchNormForward"'
  assert step_profile.fusion_groups(batch_norm) == {
      "ffi_call.7": "BatchNorm and its ReLU, forward and backward (oneDNN)"}


def test_the_kernel_gradient_forms_compared_in_conv_shapes_are_the_kernel_gradient():
  """`conv_shapes.py --kernel_gradient_forms` times two products that are not fast paths: both give XLA's result."""
  from benchmarks import conv_shapes
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 6, 5, 4)), jnp.float32)  # a non-square map: rows and columns differ
  dy = jnp.asarray(rng.standard_normal((2, 6, 5, 3)), jnp.float32)
  pads = ((1, 1), (1, 1))
  expected = conv_shapes.xla_kernel_gradient(x, jnp.zeros((3, 3, 4, 3)), dy, (1, 1), pads)
  padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  for form in (conv_shapes._per_tap_kernel_gradient, conv_shapes._shifted_gradient_kernel_gradient):
    np.testing.assert_allclose(form(padded, dy, 3).reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)


def test_the_library_probe_counts_library_fusions_custom_calls_and_xlas_own_operations():
  """`conv_shapes.py --libraries` reads the compiled module: which library each convolution and product runs in."""
  from benchmarks import conv_shapes
  hlo = "\n".join([
      '  %c = f32[2,4,4,8]{3,2,1,0} convolution(%a, %b), window={size=3x3}',
      '  %y = f32[2,4,4,8]{3,2,1,0} fusion(%a, %b), kind=kCustom, calls=%f, '
      'backend_config={"fusion_config":{"kind":"__ynn_fusion"},"outer_dimension_partitions":[]}',
      '  %d = f32[4,8]{1,0} dot(%p, %q), lhs_contracting_dims={1}, rhs_contracting_dims={0}',
      '  %o = f32[4,8]{1,0} custom-call(%p, %q), custom_call_target="__onednn$matmul"',
      '  %t = f32[8,4]{1,0} transpose(%d), dimensions={1,0}'])
  assert conv_shapes.library_calls(hlo) == {"convolution": 1, "__ynn_fusion": 1, "dot": 1, "__onednn$matmul": 1}


def test_the_library_probe_prints_what_each_operation_compiled_to(capsys):
  from benchmarks import conv_shapes
  conv_shapes.libraries()
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].startswith("XLA_FLAGS=")
  assert lines[1].startswith("3x3 convolution, forward and backward: ") and "convolution" in lines[1]
  assert lines[2].startswith("product, forward and backward: ") and "dot" in lines[2]


def test_each_models_process_gets_the_flags_less_model_and_csv():
  """`--model all` starts one process per model with the rest of the command line, in either spelling."""
  from benchmarks import throughput
  argv = ["--model", "all", "--batch_size", "4", "--csv", "zoo.csv", "--steps=1", "--csv=x.csv", "--model=all"]
  assert throughput.per_model_flags(argv) == ["--batch_size", "4", "--steps=1"]


def test_the_onednn_comparison_times_both_paths(monkeypatch, capsys):
  from benchmarks import conv_shapes
  from cnn_flax.models import onednn
  if not onednn.available():
    pytest.skip("oneDNN is not available here")
  monkeypatch.setattr(conv_shapes, "ONEDNN", [(2, 6, 4, 8, 3, 1, 1), (2, 6, 4, 4, 3, 2, 4)])
  conv_shapes.onednn_layers()
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 and all("XLA's paths" in line and "oneDNN" in line for line in lines)
  assert "depthwise" in lines[1]
  assert "CNN_FLAX_ONEDNN" not in os.environ  # the switch is put back
