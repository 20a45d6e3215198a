"""One convolution (or max pool), XLA's against cnn_flax's CPU fast path: the evidence for the rules in
cnn_flax/models/fastconv.py and fastpool.py.

  python benchmarks/conv_shapes.py                   # the small-map shapes, forward and backward (a minute)
  python benchmarks/conv_shapes.py --large           # also VGG's and DenseNet's large maps (several minutes)
  python benchmarks/conv_shapes.py --kernel_gradient # kernel gradients: XLA's against the patches product
  python benchmarks/conv_shapes.py --kernel_gradient_forms  # below the rule: XLA's against three other products
  python benchmarks/conv_shapes.py --cifar           # ResNet-20's layers: XLA's against a patches product
  python benchmarks/conv_shapes.py --pool            # max pooling's gradient: XLA's against fastpool's
  python benchmarks/conv_shapes.py --onednn          # the zoo's layers in oneDNN against XLA's fast paths
  XLA_FLAGS=... python benchmarks/conv_shapes.py --libraries  # which library XLA:CPU hands a convolution and a
                                                     # dot to under those flags (YNNPACK, oneDNN, its own)

Prints one line per shape: milliseconds per step of XLA's computation and of the fast path's.
"""
import argparse
import collections
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from cnn_flax.models import fastconv, fastpool, onednn  # noqa: E402

SMALL = [  # (batch, H=W, C_in, C_out, stride): ImageNet networks' last stages at 32 px
    (32, 2, 512, 1024, 1), (32, 1, 1024, 1024, 1), (32, 2, 512, 512, 1), (32, 4, 512, 512, 1),
    (32, 4, 256, 512, 2), (32, 7, 512, 512, 1), (32, 8, 256, 256, 1)]
LARGE = [  # VGG-16's stages at 224 px, and a DenseNet layer (32 new maps)
    (16, 224, 64, 64, 1), (16, 112, 128, 128, 1), (16, 56, 256, 256, 1), (16, 28, 512, 512, 1),
    (16, 56, 128, 32, 1)]
KERNEL_GRADIENT = [  # (batch, H=W, C_in, C_out, kernel, stride): the presets' and the 224 px tables' layers, on
    # both sides of the rule (an output gradient of 12 MiB or more goes to the product)
    (64, 32, 64, 64, 3, 1), (32, 32, 64, 64, 3, 1), (64, 32, 3, 64, 3, 1),  # VGG at 32 px, batch 64 and 32
    (64, 16, 128, 128, 3, 1), (64, 8, 256, 256, 3, 1),
    (64, 24, 64, 192, 3, 1), (64, 24, 64, 64, 3, 1), (64, 12, 128, 192, 3, 1),  # GoogLeNet at 96 px
    (64, 96, 3, 64, 7, 2), (16, 224, 3, 64, 7, 2), (64, 32, 3, 64, 7, 2),  # the 7x7/2 stems
    (16, 224, 3, 64, 11, 4), (32, 224, 3, 64, 11, 4),  # AlexNet's stem
    (16, 56, 64, 64, 3, 1), (16, 28, 128, 128, 3, 1), (16, 56, 128, 128, 3, 2), (64, 56, 128, 128, 3, 2),  # ResNet-50
    (16, 56, 64, 192, 3, 1), (16, 28, 128, 192, 3, 1),  # GoogLeNet at 224 px
    (16, 56, 128, 32, 3, 1), (64, 56, 128, 32, 3, 1), (64, 32, 128, 12, 3, 1),  # DenseNet-121, DenseNet-BC-100
    (64, 32, 16, 16, 3, 1)]  # ResNet-20
POOLS = [  # (batch, H=W, C, window, stride, padding): the zoo's max pools at the presets' and the tables' sizes
    (64, 32, 64, 2, 2, "VALID"), (64, 16, 128, 2, 2, "VALID"),  # VGG at 32 px
    (16, 112, 64, 3, 2, ((1, 1), (1, 1))),  # ResNet's and DenseNet's stem pool at 224 px
    (64, 48, 64, 3, 2, ((0, 1), (0, 1))), (64, 24, 192, 3, 1, ((1, 1), (1, 1))),  # GoogLeNet at 96 px
    (64, 12, 480, 3, 1, ((1, 1), (1, 1))),
    (16, 55, 64, 3, 2, "VALID")]  # AlexNet at 224 px

KERNEL_GRADIENT_FORMS = [  # (batch, H=W, C_in, C_out): 3x3, stride 1, under the rule (XLA's kernel gradient)
    (64, 32, 16, 16), (64, 16, 32, 32), (64, 8, 64, 64),  # ResNet-20 at the digits presets' batch
    (64, 32, 48, 12), (64, 16, 48, 12), (64, 8, 48, 12),  # DenseNet-BC-100's growth convolutions
    (16, 56, 128, 32), (16, 28, 128, 32), (16, 14, 128, 32),  # DenseNet-121's at 224 px
    (16, 28, 128, 128)]  # ResNet-50's second stage at 224 px

ONEDNN = [  # (batch, H=W, C_in, C_out, kernel, stride, groups): ResNet-50's layers at 224 px, batch 16, and others
    (16, 224, 3, 64, 7, 2, 1), (16, 56, 64, 64, 3, 1, 1), (16, 56, 64, 256, 1, 1, 1), (16, 56, 256, 128, 1, 2, 1),
    (16, 28, 128, 128, 3, 1, 1), (16, 14, 256, 256, 3, 1, 1), (16, 7, 512, 512, 3, 1, 1), (16, 14, 1024, 256, 1, 1, 1),
    (16, 56, 128, 32, 3, 1, 1),  # a DenseNet-121 growth convolution
    (16, 112, 64, 64, 3, 1, 64), (16, 14, 512, 512, 3, 1, 512),  # MobileNet v1's depthwise convolutions
    (64, 32, 16, 16, 3, 1, 1), (64, 8, 64, 64, 3, 1, 1)]  # ResNet-20 at the digits presets' batch

CHANNELS_LAST = ("NHWC", "HWIO", "NHWC")  # every convolution here: NHWC input and output, HWIO kernel
SAME_3X3 = ((1, 1), (1, 1))
CIFAR = [  # (batch, H=W, C_in, C_out): ResNet-20's three stages and its stem at 32 px, the digits presets' batch
    (64, 32, 16, 16), (64, 16, 32, 32), (64, 8, 64, 64), (64, 32, 3, 16)]


def xla_kernel_gradient(x, w, dy, strides, pads):
  """XLA's own kernel gradient (its backward-filter convolution), as autodiff of the NHWC convolution gives it."""
  conv = lambda w: lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=CHANNELS_LAST)
  return jax.vjp(conv, w)[1](dy)[0]


def forward_backward(conv):
  """The jitted gradients of a convolution `conv(x, w)` with respect to both inputs: one training step's work."""
  return jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))


def library_calls(hlo_text: str) -> collections.Counter:
  """Counts what a compiled module's convolutions and products run as: each library fusion (`__ynn_fusion`,
  `__onednn_fusion`, ...) and custom call (`__onednn$convolution`, ...) by name, and XLA's own `convolution` and
  `dot` operations (inside the fusions too: a library fusion wraps the operation it replaces)."""
  counts = collections.Counter()
  for line in hlo_text.splitlines():
    if '"kind":"__' in line:
      counts[line.split('"kind":"')[1].split('"')[0]] += 1
    if "custom_call_target=" in line:
      counts[line.split('custom_call_target="')[1].split('"')[0]] += 1
    for op in ("convolution", "dot"):
      if f" {op}(" in line:
        counts[op] += 1
  return counts


def libraries():
  """Compiles one 3x3 convolution and one product, each forward and backward, under this process's XLA_FLAGS,
  and prints what they run as. A flag that names a library but leaves this unchanged did nothing."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((16, 28, 28, 64)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 64, 64)), jnp.float32)
  conv = functools.partial(lax.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                           dimension_numbers=CHANNELS_LAST)
  rows, cols = jnp.ones((12544, 64)), jnp.ones((64, 128))
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  for name, fn, args in (("3x3 convolution", conv, (x, w)), ("product", jnp.dot, (rows, cols))):
    compiled = forward_backward(fn).lower(*args).compile()
    counts = library_calls(compiled.as_text())
    print(f"{name}, forward and backward: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def time_ms(fn, *args, repeats=3):
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return 1000 * (time.perf_counter() - start) / repeats


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--large", action="store_true", help="also the large maps")
  parser.add_argument("--kernel_gradient", action="store_true", help="only kernel gradients")
  parser.add_argument("--cifar", action="store_true", help="only ResNet-20's layers as patches products (not a "
                      "fast path)")
  parser.add_argument("--kernel_gradient_forms", action="store_true", help="only kernel gradients under the rule, "
                      "four ways (none is a fast path)")
  parser.add_argument("--pool", action="store_true", help="only max pooling's gradient")
  parser.add_argument("--libraries", action="store_true", help="only which library each operation compiles to")
  parser.add_argument("--onednn", action="store_true", help="only oneDNN's convolutions against XLA's fast paths")
  args = parser.parse_args()
  if args.libraries:
    return libraries()
  if args.onednn:
    return onednn_layers()
  if args.kernel_gradient:
    return kernel_gradients()
  if args.kernel_gradient_forms:
    return kernel_gradient_forms()
  if args.pool:
    return max_pools()
  if args.cifar:
    return cifar_patches()
  shapes = SMALL + (LARGE if args.large else [])
  for batch, size, cin, cout, stride in shapes:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.01 * rng.standard_normal((3, 3, cin, cout)), jnp.float32)
    args = dict(window_strides=(stride, stride), padding="SAME", dimension_numbers=CHANNELS_LAST)
    plain = time_ms(forward_backward(functools.partial(lax.conv_general_dilated, **args)), x, w)
    fast = time_ms(forward_backward(functools.partial(fastconv.conv_general_dilated, **args)), x, w)
    print(f"batch {batch} {size}x{size} {cin}->{cout} stride {stride}: XLA {plain:.1f} ms, fast path {fast:.1f} ms "
          f"({plain / fast:.2f}x)", flush=True)


def onednn_layers():
  """Forward and both gradients of the zoo's layers: fastconv with oneDNN (the default where it builds) against
  fastconv without it (`CNN_FLAX_ONEDNN=0`: XLA's convolutions and the rewrites)."""
  if not onednn.available():
    return print("oneDNN is not available here (see cnn_flax/models/onednn.py)")
  for batch, size, cin, cout, k, stride, groups in ONEDNN:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.01 * rng.standard_normal((k, k, cin // groups, cout)), jnp.float32)
    conv = functools.partial(fastconv.conv_general_dilated, window_strides=(stride, stride), padding="SAME",
                             dimension_numbers=CHANNELS_LAST, feature_group_count=groups)
    with_onednn = forward_backward(conv)
    os.environ["CNN_FLAX_ONEDNN"] = "0"  # read while tracing: the second function compiles without oneDNN
    try:
      without = forward_backward(lambda x, w, conv=conv: conv(x, w))  # a new function: a new trace
      without_ms = time_ms(without, x, w)
    finally:
      del os.environ["CNN_FLAX_ONEDNN"]
    onednn_ms = time_ms(with_onednn, x, w)
    kind = "depthwise" if groups == cin else f"{k}x{k}"
    print(f"batch {batch} {size}x{size} {cin}->{cout} {kind} stride {stride}, forward and backward: XLA's paths "
          f"{without_ms:.1f} ms, oneDNN {onednn_ms:.1f} ms ({without_ms / onednn_ms:.2f}x)", flush=True)


def kernel_gradients():
  """The kernel gradient alone, XLA's backward-filter convolution against the input's (strided) patches times the
  output gradient (`fastconv`'s product), with the size of the output gradient that the rule reads."""
  for batch, size, cin, cout, k, stride in KERNEL_GRADIENT:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.01 * rng.standard_normal((k, k, cin, cout)), jnp.float32)
    pads = list(lax.padtype_to_pads(x.shape[1:3], (k, k), (stride, stride), "SAME"))
    out_shape = jax.eval_shape(lambda x, w, stride=stride, pads=pads: lax.conv_general_dilated(
        x, w, (stride, stride), pads, dimension_numbers=CHANNELS_LAST), x, w).shape
    dy = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
    xla = jax.jit(lambda x, dy, w=w, stride=stride, pads=pads: xla_kernel_gradient(x, w, dy, (stride, stride), pads))
    product = jax.jit(lambda x, dy, k=k, stride=stride, pads=pads, w=w: fastconv._patches_kernel_gradient(
        jnp.pad(x, ((0, 0), *pads, (0, 0))), dy, k, k, (stride, stride)).reshape(w.shape))
    np.testing.assert_allclose(xla(x, dy), product(x, dy), rtol=1e-3, atol=5e-2)  # sums of ~10^5 terms
    plain, fast = time_ms(xla, x, dy), time_ms(product, x, dy)
    rule = "product" if fastconv.kernel_gradient_as_product(dy.shape, dy.dtype.itemsize) else "XLA"
    print(f"batch {batch} {size}x{size} {cin}->{cout} {k}x{k} stride {stride}, output gradient "
          f"{dy.size * dy.dtype.itemsize / 2**20:.1f} MiB (rule: {rule}): XLA {plain:.1f} ms, product {fast:.1f} ms "
          f"({plain / fast:.2f}x)", flush=True)


def _per_tap_kernel_gradient(padded, dy, k: int):
  """k*k products, each window of the input (copied out of it) against the output gradient."""
  flat_dy = dy.reshape(-1, dy.shape[-1])
  return jnp.stack([window.reshape(-1, window.shape[-1]).T @ flat_dy
                    for window in fastconv.windows(padded, k, k, (1, 1))])


def _shifted_gradient_kernel_gradient(padded, dy, k: int):
  """One product of the padded input with k*k shifted copies of the output gradient, side by side: the copies
  cost k*k*C_out per position instead of the patches' k*k*C_in (DenseNet's 3x3 convolutions add 12 or 32 maps to
  48 or 128). Tap (i, j) of the kernel meets input pixel (h + i, w + j) at output (h, w), so the output gradient
  padded by (i, k-1-i) rows and (j, k-1-j) columns lines up with the padded input."""
  shifted = jnp.stack([jnp.pad(dy, ((0, 0), (i, k - 1 - i), (j, k - 1 - j), (0, 0)))
                       for i in range(k) for j in range(k)], axis=-2)
  return jnp.einsum("nhwc,nhwto->tco", padded, shifted)


def kernel_gradient_forms():
  """3x3 kernel gradients that the rule leaves to XLA (small output gradients), XLA's against the patches product,
  k*k per-tap products and the shifted-output-gradient product: the measurement behind leaving them to XLA."""
  pad = lambda x: jnp.pad(x, ((0, 0), *SAME_3X3, (0, 0)))
  for batch, size, cin, cout in KERNEL_GRADIENT_FORMS:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.01 * rng.standard_normal((3, 3, cin, cout)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((batch, size, size, cout)), jnp.float32)
    forms = {
        "XLA": lambda x, dy, w=w: xla_kernel_gradient(x, w, dy, (1, 1), SAME_3X3),
        "patches": lambda x, dy: fastconv._patches_kernel_gradient(pad(x), dy, 3, 3, (1, 1)),
        "per tap": lambda x, dy: _per_tap_kernel_gradient(pad(x), dy, 3),
        "shifted output gradient": lambda x, dy: _shifted_gradient_kernel_gradient(pad(x), dy, 3)}
    expected, times = jax.jit(forms["XLA"])(x, dy), {}
    for name, form in forms.items():
      form = jax.jit(form)
      np.testing.assert_allclose(form(x, dy).reshape(w.shape), expected, rtol=1e-3, atol=5e-2)
      times[name] = time_ms(form, x, dy)
    print(f"batch {batch} {size}x{size} {cin}->{cout} 3x3: "
          + ", ".join(f"{name} {ms:.1f} ms" for name, ms in times.items()), flush=True)


def max_pools():
  """Max pooling, forward and backward together: `nn.max_pool` (XLA's select_and_scatter gradient) against
  `fastpool.max_pool`."""
  for batch, size, channels, window, stride, padding in POOLS:
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, channels)), jnp.float32)
    args = dict(window_shape=(window, window), strides=(stride, stride), padding=padding)
    step = lambda pool, args=args: jax.jit(jax.grad(lambda inputs: jnp.sum(pool(inputs, **args) ** 2)))
    plain, fast = time_ms(step(nn.max_pool), x), time_ms(step(fastpool.max_pool), x)
    print(f"batch {batch} {size}x{size}x{channels} {window}x{window}/{stride} pool: XLA {plain:.1f} ms, "
          f"fastpool {fast:.1f} ms ({plain / fast:.2f}x)", flush=True)


def cifar_patches():
  """ResNet-20's 3x3 convolutions, forward and backward, XLA's against the small-map path's patches product
  applied to them: the measurement behind leaving small-channel convolutions to XLA."""
  for batch, size, cin, cout in CIFAR:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(0.1 * rng.standard_normal((3, 3, cin, cout)), jnp.float32)
    xla = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), SAME_3X3, dimension_numbers=CHANNELS_LAST)
    product = lambda x, w: fastconv._small_map(x, w, (1, 1), SAME_3X3, None)
    np.testing.assert_allclose(xla(x, w), product(x, w), rtol=1e-4, atol=1e-4)
    plain, fast = time_ms(forward_backward(xla), x, w), time_ms(forward_backward(product), x, w)
    print(f"batch {batch} {size}x{size} {cin}->{cout}, forward and backward: XLA {plain:.1f} ms, product {fast:.1f} ms "
          f"({plain / fast:.2f}x)", flush=True)


if __name__ == "__main__":
  main()
