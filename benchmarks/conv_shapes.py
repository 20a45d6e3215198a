"""One 3x3 convolution, XLA's against cnn_flax's CPU fast path, forward and backward together: the evidence for
the rules in cnn_flax/models/fastconv.py.

  python benchmarks/conv_shapes.py                 # the small-map shapes (a minute)
  python benchmarks/conv_shapes.py --large         # also VGG's and DenseNet's large maps (several minutes)
  python benchmarks/conv_shapes.py --strided       # strided kernel gradients: XLA's against a patches product
  python benchmarks/conv_shapes.py --cifar         # ResNet-20's layers: XLA's against a patches product

Prints one line per shape: milliseconds per step of `lax.conv_general_dilated` and of `fastconv`'s computation.
"""
import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from cnn_flax.models import fastconv  # noqa: E402

SMALL = [  # (batch, H=W, C_in, C_out, stride): ImageNet networks' last stages at 32 px
    (32, 2, 512, 1024, 1), (32, 1, 1024, 1024, 1), (32, 2, 512, 512, 1), (32, 4, 512, 512, 1),
    (32, 4, 256, 512, 2), (32, 7, 512, 512, 1), (32, 8, 256, 256, 1)]
LARGE = [  # VGG-16's stages at 224 px, and a DenseNet layer (32 new maps)
    (16, 224, 64, 64, 1), (16, 112, 128, 128, 1), (16, 56, 256, 256, 1), (16, 28, 512, 512, 1),
    (16, 56, 128, 32, 1)]
STRIDED = [  # (batch, H=W, C_in, C_out, kernel, stride): the stems of ResNet and AlexNet, ResNet-50's 3x3/2 layers
    (16, 224, 3, 64, 7, 2), (16, 224, 3, 64, 11, 4), (16, 56, 128, 128, 3, 2), (16, 28, 256, 256, 3, 2),
    (16, 14, 512, 512, 3, 2)]

CIFAR = [  # (batch, H=W, C_in, C_out): ResNet-20's three stages and its stem at 32 px, the digits presets' batch
    (64, 32, 16, 16), (64, 16, 32, 32), (64, 8, 64, 64), (64, 32, 3, 16)]


def forward_backward(conv):
  """The jitted gradients of a convolution `conv(x, w)` with respect to both inputs: one training step's work."""
  return jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))


def time_ms(fn, *args, repeats=3):
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return 1000 * (time.perf_counter() - start) / repeats


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--large", action="store_true", help="also the large maps")
  parser.add_argument("--strided", action="store_true", help="only strided kernel gradients (not a fast path)")
  parser.add_argument("--cifar", action="store_true", help="only ResNet-20's layers as patches products (not a "
                      "fast path)")
  args = parser.parse_args()
  if args.strided:
    return strided_kernel_gradients()
  if args.cifar:
    return cifar_patches()
  shapes = SMALL + (LARGE if args.large else [])
  for batch, size, cin, cout, stride in shapes:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.01 * rng.standard_normal((3, 3, cin, cout)), jnp.float32)
    args = dict(window_strides=(stride, stride), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    plain = time_ms(forward_backward(functools.partial(lax.conv_general_dilated, **args)), x, w)
    fast = time_ms(forward_backward(functools.partial(fastconv.conv_general_dilated, **args)), x, w)
    print(f"batch {batch} {size}x{size} {cin}->{cout} stride {stride}: XLA {plain:.1f} ms, fast path {fast:.1f} ms "
          f"({plain / fast:.2f}x)", flush=True)


def strided_kernel_gradients():
  """The kernel gradient alone of strided convolutions, XLA's backward-filter convolution against the input's
  strided patches times the output gradient: the measurement behind leaving strided convolutions to XLA."""
  dn = ("NHWC", "HWIO", "NHWC")
  for batch, size, cin, cout, k, stride in STRIDED:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.01 * rng.standard_normal((k, k, cin, cout)), jnp.float32)
    pads = list(lax.padtype_to_pads(x.shape[1:3], (k, k), (stride, stride), "SAME"))
    conv = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=dn)
    dy = jnp.asarray(rng.standard_normal(conv(x, w).shape), jnp.float32)
    xla = jax.jit(lambda x, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])

    product = jax.jit(lambda x, dy: fastconv._patches_kernel_gradient(  # the stride-1 path's product, strided
        jnp.pad(x, ((0, 0), *pads, (0, 0))), dy, k, k, (stride, stride)).reshape(k, k, cin, cout))
    np.testing.assert_allclose(xla(x, dy), product(x, dy), rtol=1e-3, atol=5e-2)  # sums of ~10^5 terms
    plain, fast = time_ms(xla, x, dy), time_ms(product, x, dy)
    print(f"batch {batch} {size}x{size} {cin}->{cout} {k}x{k} stride {stride}, kernel gradient: XLA {plain:.1f} ms, "
          f"product {fast:.1f} ms ({plain / fast:.2f}x)", flush=True)


def cifar_patches():
  """ResNet-20's 3x3 convolutions, forward and backward, XLA's against the small-map path's patches product
  applied to them: the measurement behind leaving small-channel convolutions to XLA."""
  for batch, size, cin, cout in CIFAR:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.1 * rng.standard_normal((3, 3, cin, cout)), jnp.float32)
    pads = [(1, 1), (1, 1)]
    xla = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    product = lambda x, w: fastconv._small_map(x, w, (1, 1), pads, None)
    np.testing.assert_allclose(xla(x, w), product(x, w), rtol=1e-4, atol=1e-4)
    plain, fast = time_ms(forward_backward(xla), x, w), time_ms(forward_backward(product), x, w)
    print(f"batch {batch} {size}x{size} {cin}->{cout}, forward and backward: XLA {plain:.1f} ms, product {fast:.1f} ms "
          f"({plain / fast:.2f}x)", flush=True)


if __name__ == "__main__":
  main()
