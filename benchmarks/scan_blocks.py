"""Scanning a ResNet's identical blocks, against the unrolled network: what it does to tracing, compilation and the
step on this machine. An experiment, not a project option (see benchmarks/README.md, "Compile time").

  python benchmarks/scan_blocks.py                                    # ResNet-152, 64 px, batch 8 (a few minutes)
  python benchmarks/scan_blocks.py --model resnet56 --image_size 32   # a CIFAR ResNet

The scanned variant keeps the parameter tree of the registered model: each stage's first block runs as it is, and
the stage's remaining blocks (identical in shape) run as one `lax.scan` over their variables, stacked from the
per-block entries at apply time, their updated BatchNorm statistics written back to the same entries. So it loads
the same checkpoints and computes the same function; the script checks that and prints one JSON line per variant:
lower_s (tracing and lowering, paid on every start), compile_s (XLA, skipped by a warm persistent cache), step_ms
(forward and backward), and the largest difference of loss and gradients from the unrolled network.
"""
import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from cnn_flax import models  # noqa: E402
from cnn_flax.models import layers, resnet  # noqa: E402


def run_blocks(parent: nn.Module, make_block, names: list[str], x, train: bool):
  """The blocks `names` in sequence, as one scan over their stacked variables (plain calls while initialising)."""
  if parent.is_initializing():
    for name in names:
      x = make_block(name=name)(x, train)
    return x
  collections = {c: [parent.variables[c][n] for n in names] for c in parent.variables}
  stacked = {c: jax.tree.map(lambda *leaves: jnp.stack(leaves), *entries) for c, entries in collections.items()}
  block = make_block(parent=None)
  mutable = ["batch_stats"] if train else False

  def body(h, variables):
    if not train:
      return block.apply(variables, h, train), None
    h, updates = block.apply(variables, h, train, mutable=mutable)
    return h, updates["batch_stats"]

  x, new_stats = jax.lax.scan(body, x, stacked)
  if train:
    for i, name in enumerate(names):
      parent.put_variable("batch_stats", name, jax.tree.map(lambda a, i=i: a[i], new_stats))
  return x


class ScannedResNet(resnet.ResNet):
  """torchvision's ResNet with each stage's blocks after the first scanned (same parameters, same function)."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = jnp.asarray(x, self.dtype)
    x = resnet.conv_bn(self.num_filters, 7, 2, bn_epsilon=self.bn_epsilon, name="stem", dtype=self.dtype)(x, train)
    x = layers.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    extra = {"stride_on_3x3": self.stride_on_3x3} if issubclass(self.block, resnet.BottleneckBlock) else {}
    for i, num_blocks in enumerate(self.stage_sizes):
      make = functools.partial(self.block, self.num_filters * 2**i, shortcut="B", plain=self.plain,
                               se_ratio=self.se_ratio, zero_init_last_bn=self.zero_init_last_bn,
                               bn_epsilon=self.bn_epsilon, dtype=self.dtype, **extra)
      x = make(strides=2 if i > 0 else 1, name=f"layer{i + 1}_0")(x, train)
      x = run_blocks(self, make, [f"layer{i + 1}_{j}" for j in range(1, num_blocks)], x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


class ScannedCifarResNet(resnet.CifarResNet):
  """The CIFAR ResNet with each stage's blocks after the first scanned."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = jnp.asarray(x, self.dtype)
    x = resnet.conv_bn(self.num_filters, 3, bn_epsilon=self.bn_epsilon, name="stem", dtype=self.dtype)(x, train)
    for i, num_blocks in enumerate(self.stage_sizes):
      make = functools.partial(resnet.BasicBlock, self.num_filters * 2**i, shortcut=self.shortcut, plain=self.plain,
                               se_ratio=self.se_ratio, zero_init_last_bn=self.zero_init_last_bn,
                               bn_epsilon=self.bn_epsilon, dtype=self.dtype)
      x = make(strides=2 if i > 0 else 1, name=f"layer{i + 1}_0")(x, train)
      x = run_blocks(self, make, [f"layer{i + 1}_{j}" for j in range(1, num_blocks)], x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


def scanned(model: nn.Module) -> nn.Module:
  """The same model, its identical blocks scanned."""
  cls = ScannedCifarResNet if isinstance(model, resnet.CifarResNet) else ScannedResNet
  fields = {f: getattr(model, f) for f in model.__dataclass_fields__ if f not in ("parent", "name")}
  return cls(**fields)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet152")
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  unrolled = models.create(args.model, num_classes=10)
  if not isinstance(unrolled, (resnet.ResNet, resnet.CifarResNet)):
    sys.exit(f"error: --model {args.model}: this experiment covers the ResNets (their blocks are identical); "
             "pick resnet18 ... resnet152 or resnet20 ... resnet110")
  x = jax.random.normal(jax.random.key(1), (args.batch_size, args.image_size, args.image_size, 3))
  labels = jnp.arange(args.batch_size) % 10
  variables = jax.jit(lambda: unrolled.init(jax.random.key(0), x[:1], False))()

  def loss_fn(model, params, batch_stats):
    logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, True, mutable=["batch_stats"])
    loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
    return loss, updates

  reference = None
  for variant, model in (("unrolled", unrolled), ("scanned", scanned(unrolled))):
    step = jax.jit(jax.value_and_grad(functools.partial(loss_fn, model), has_aux=True))
    start = time.perf_counter()
    lowered = step.lower(variables["params"], variables["batch_stats"])
    lower_s = time.perf_counter() - start
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start - lower_s
    out = jax.block_until_ready(compiled(variables["params"], variables["batch_stats"]))
    start = time.perf_counter()
    for _ in range(args.steps):
      jax.block_until_ready(compiled(variables["params"], variables["batch_stats"]))
    step_ms = 1000 * (time.perf_counter() - start) / args.steps
    if reference is None:
      reference, difference = out, 0.0
    else:
      assert jax.tree.structure(out) == jax.tree.structure(reference), "the scanned variant changed the tree"
      difference = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(out),
                                                                         jax.tree.leaves(reference), strict=True))
    print(json.dumps({"model": args.model, "variant": variant, "image_size": args.image_size,
                      "batch_size": args.batch_size, "lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2),
                      "step_ms": round(step_ms, 1), "max_abs_difference": float(f"{difference:.3g}")}), flush=True)


if __name__ == "__main__":
  main()
