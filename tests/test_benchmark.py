"""The throughput benchmark: it times the real step and reports what the contract names (benchmarks/throughput.py)."""
import json

import pytest

from cnn_flax import benchmark, summary
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
