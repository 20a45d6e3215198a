"""Images/s of the input pipeline alone, against what the training step consumes.

  python benchmarks/input_pipeline.py [--seconds 5] [--workers 0 2]

Pipelines measured (host-local batches, as the trainer gets them):
* CIFAR-sized records (32x32x3 uint8 in memory) through Grain: the record feed;
* the on-device feed for the same data (Grain yields indices, the step gathers on the accelerator);
* ImageNet-sized JPEGs (about 500x375, decoded with Pillow) with Inception random-resized crop to 224,
  in the main process and with Grain worker processes.
Consumers: the jitted train step of LeNet-5 (32x32x1, batch 64) and ResNet-20 (32x32x3, batch 128) on this
machine. The target (issue 4) is a pipeline at >= 3x what the step consumes, on the path the trainer picks.
"""
import argparse
import io
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")


class JpegSource:
  """A random-access source of encoded JPEGs decoded on access, like an ImageNet array_record source."""

  def __init__(self, n: int = 64, seed: int = 0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    self.blobs = []
    for _ in range(n):
      # Smooth random images compress like photos do (noise would make JPEGs unrealistically large).
      small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
      buffer = io.BytesIO()
      Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(buffer, format="JPEG", quality=90)
      self.blobs.append(buffer.getvalue())

  def __len__(self):
    return 100_000  # cycles over the blobs: length matters only for the shuffle

  def __getitem__(self, index):
    from PIL import Image
    image = np.asarray(Image.open(io.BytesIO(self.blobs[index % len(self.blobs)])).convert("RGB"))
    return {"image": image, "label": index % 1000}


def rate(iterator, batch_size: int, seconds: float) -> float:
  next(iterator)  # warm-up (worker start-up, first compile)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += batch_size
  return count / (time.perf_counter() - start)


def step_rate(model_name: str, image_shape, batch_size: int, seconds: float) -> float:
  import jax
  import jax.numpy as jnp
  import optax

  from cnn_flax import models, steps
  model = models.create(model_name, num_classes=10)
  cfg = steps.StepConfig(model=model, tx=optax.sgd(0.01, momentum=0.9), mean=(128.0,), std=(64.0,),
                         num_classes=10)
  state = steps.init_state(cfg, image_shape, jax.random.key(0))
  step = jax.jit(lambda s, b: steps.train_step(cfg, s, b), donate_argnums=0)
  batch = {"image": jnp.zeros((batch_size, *image_shape), jnp.uint8), "label": jnp.zeros((batch_size,), jnp.int32)}

  def run():
    nonlocal state
    while True:
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      yield

  return rate(run(), batch_size, seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seconds", type=float, default=5.0)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  args = parser.parse_args()
  from absl import flags
  flags.FLAGS.mark_as_parsed()

  import jax

  from cnn_flax.data import datasets, pipeline
  print(f"cores: {os.cpu_count()}, backend: {jax.default_backend()}")

  lenet = step_rate("lenet5", (32, 32, 1), 64, args.seconds)
  resnet20 = step_rate("resnet20", (32, 32, 3), 128, args.seconds)
  print(f"train step consumes: lenet5 {lenet:,.0f} images/s, resnet20 {resnet20:,.0f} images/s")

  cifar = datasets.ArraySource(np.random.default_rng(0).integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
                               np.zeros(50_000, np.int32))
  records = pipeline.train_iterator(cifar, image_shape=(32, 32, 3), local_batch_size=128, seed=0)
  cifar_rate = rate(records, 128, args.seconds)
  indices = pipeline.index_iterator(50_000, local_batch_size=128, seed=0)
  index_rate = rate(indices, 128, args.seconds)
  print(f"CIFAR-sized record feed (main process): {cifar_rate:,.0f} images/s "
        f"= {cifar_rate / resnet20:.1f}x resnet20")
  print(f"CIFAR-sized on-device feed (indices; the trainer's pick for CIFAR): {index_rate:,.0f} images/s "
        f"= {index_rate / resnet20:.1f}x resnet20, {index_rate / lenet:.1f}x lenet5")

  jpegs = JpegSource()
  for workers in args.workers:
    it = pipeline.train_iterator(jpegs, image_shape=(224, 224, 3), local_batch_size=32, seed=0,
                                 num_workers=workers, augment=pipeline.HostAugment("random_resized_crop"))
    print(f"ImageNet-sized JPEG + random-resized crop, {workers} workers: {rate(it, 32, args.seconds):,.0f} images/s",
          flush=True)


if __name__ == "__main__":
  main()
