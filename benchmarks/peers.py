"""The same model's training (or inference) step in PyTorch (torchvision) or Keras 3 on JAX, timed like ours.

Optional: a peer that is not installed is skipped with a line saying so. Both run in float32 on the CPU, where
they are compared; PyTorch uses channels_last, its fastest CPU layout for these networks. `throughput.py --peer`
times each in a process of its own (`measure_apart`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCHVISION = {"alexnet": "alexnet", "vgg11": "vgg11", "vgg13": "vgg13", "vgg16": "vgg16", "vgg19": "vgg19",
               "vgg11_bn": "vgg11_bn", "vgg16_bn": "vgg16_bn", "googlenet_bn": "googlenet", "resnet18": "resnet18",
               "resnet34": "resnet34", "resnet50": "resnet50", "resnet101": "resnet101", "resnet152": "resnet152",
               "densenet121": "densenet121", "densenet161": "densenet161", "densenet169": "densenet169",
               "densenet201": "densenet201", "mobilenet_v1": "mobilenet_v1", "densenet_bc_100": "densenet_bc_100"}
KERAS = {"vgg16": "VGG16", "vgg19": "VGG19", "resnet50": "ResNet50", "resnet101": "ResNet101",
         "resnet152": "ResNet152", "densenet121": "DenseNet121", "densenet169": "DenseNet169",
         "densenet201": "DenseNet201", "mobilenet_v1": "MobileNet"}


def measure(peer: str, model: str, batch_size: int, image_size: int, steps: int, warmup: int, mode: str) -> dict:
  """{"images_per_sec", "step_ms", "compile_s"} or {"skipped": why}."""
  table = TORCHVISION if peer == "torch" else KERAS
  if model not in table:
    return {"skipped": f"{peer} has no counterpart of {model}"}
  try:
    fn = _torch if peer == "torch" else _keras
    return fn(table[model], batch_size, image_size, steps, warmup, mode)
  except ImportError as e:
    return {"skipped": f"{peer} is not installed ({e.name}); pip install "
                       f"{'torch torchvision' if peer == 'torch' else 'keras'}"}


def measure_apart(peer: str, model: str, batch_size: int, image_size: int, steps: int, warmup: int,
                  mode: str) -> dict:
  """`measure` in a process of its own, started after cnn_flax's step has been timed: the peer shares no threads
  and no libraries with it. In one process, PyTorch ran its step far slower once cnn_flax's oneDNN handlers had
  run (two OpenMP runtimes, each with its own threads; benchmarks/README.md)."""
  code = "import json, sys; from benchmarks import peers; print(json.dumps(peers.measure(*json.loads(sys.argv[1]))))"
  done = subprocess.run([sys.executable, "-c", code, json.dumps([peer, model, batch_size, image_size, steps, warmup,
                                                                  mode])], cwd=ROOT, capture_output=True, text=True)
  lines = done.stdout.strip().splitlines()
  if done.returncode or not lines:
    return {"skipped": f"{peer} failed: " + (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
  return json.loads(lines[-1])


def _timed(step, steps: int, warmup: int, sync) -> tuple[float, float]:
  start = time.perf_counter()
  step()
  sync()
  first = time.perf_counter() - start
  for _ in range(max(warmup - 1, 0)):
    step()
  sync()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  sync()
  return first, time.perf_counter() - start


def _torch(name, batch_size, image_size, steps, warmup, mode):
  import torch
  import torchvision
  kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
  build = BUILT_HERE.get(name) or getattr(torchvision.models, name)
  net = build(weights=None, **kwargs).to(memory_format=torch.channels_last)
  x = torch.randn(batch_size, 3, image_size, image_size).to(memory_format=torch.channels_last)
  classes = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1].out_features  # 10 for CIFAR's
  y = torch.randint(0, classes, (batch_size,))
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
  loss_fn = torch.nn.CrossEntropyLoss()

  def train_step():
    opt.zero_grad(set_to_none=True)
    loss_fn(net(x), y).backward()
    opt.step()

  def eval_step():
    with torch.no_grad():
      net(x)

  net.train(mode == "train")
  first, elapsed = _timed(train_step if mode == "train" else eval_step, steps, warmup, lambda: None)
  return {"images_per_sec": round(steps * batch_size / elapsed, 3), "step_ms": round(1000 * elapsed / steps, 3),
          "first_step_s": round(first, 2), "threads": torch.get_num_threads(), "version": torch.__version__}


def _torch_mobilenet_v1(weights=None):
  """MobileNet v1 (Howard et al. 2017, Table 1; 4.23M parameters, as cnn_flax's): torchvision has only v2 and v3."""
  del weights
  from torch import nn

  def conv_bn(cin, cout, kernel, stride, groups=1):
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]

  layers, cin = conv_bn(3, 32, 3, 2), 32  # the stem
  for cout, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2),
                                                                                                     (1024, 1)]:
    layers += conv_bn(cin, cin, 3, stride, groups=cin) + conv_bn(cin, cout, 1, 1)  # depthwise 3x3, pointwise 1x1
    cin = cout
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000))


def _torch_densenet_bc_100(weights=None):
  """CIFAR DenseNet-BC (L=100, k=12; Huang et al. 2017, 0.77M parameters, as cnn_flax's `densenet_bc_100`):
  torchvision's DenseNet with three 16-layer blocks and its ImageNet stem (7x7/2 conv, BN, ReLU, max-pool)
  replaced by the paper's single 3x3 conv to 2k maps."""
  del weights
  import torchvision
  from torch import nn
  net = torchvision.models.DenseNet(growth_rate=12, block_config=(16, 16, 16), num_init_features=24, bn_size=4,
                                    num_classes=10)
  net.features.conv0 = nn.Conv2d(3, 24, 3, 1, 1, bias=False)
  del net.features.norm0, net.features.relu0, net.features.pool0
  return net


# The peers torchvision does not have, built here to the same architecture as ours.
BUILT_HERE = {"mobilenet_v1": _torch_mobilenet_v1, "densenet_bc_100": _torch_densenet_bc_100}


def _keras(name, batch_size, image_size, steps, warmup, mode):
  import os
  os.environ.setdefault("KERAS_BACKEND", "jax")  # read at Keras's first import
  import keras
  import numpy as np
  if keras.backend.backend() != "jax":
    return {"skipped": f"Keras was already imported with the {keras.backend.backend()} backend"}
  net = getattr(keras.applications, name)(weights=None, input_shape=(image_size, image_size, 3),
                                          classifier_activation=None)
  net.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch_size, image_size, image_size, 3), dtype=np.float32)
  y = rng.integers(0, 1000, (batch_size,))
  step = (lambda: net.train_on_batch(x, y)) if mode == "train" else (lambda: net.predict_on_batch(x))
  first, elapsed = _timed(step, steps, warmup, lambda: None)  # train_on_batch returns host values: synced
  return {"images_per_sec": round(steps * batch_size / elapsed, 3), "step_ms": round(1000 * elapsed / steps, 3),
          "first_step_s": round(first, 2), "version": keras.__version__}
