"""Convolutions and BatchNorm in oneDNN, the library PyTorch's CPU convolutions run in, called from XLA:CPU through
`jax.ffi`.

XLA:CPU computes convolutions in YNNPACK (jax 0.10); its own oneDNN convolution rewriter is compiled out of the
pip jaxlib. oneDNN's kernels, forward and both gradients, are 1.0-2.9x faster on ResNet-50's layers on the
development CPU and 4-10x on MobileNet's depthwise ones (`python benchmarks/conv_shapes.py --onednn`), so
`fastconv` sends float32 convolutions on a single CPU device through `conv` below. The kernel stays an HWIO
array and the activations NHWC: parameters, checkpoints and weight import are untouched.

`batchnorm.BatchNorm` computes its training pass in oneDNN too (`onednn_batchnorm.cc`; see there why).

The handlers (`onednn_conv.cc`, `onednn_batchnorm.cc`) are compiled on first use with the C++ compiler (`$CXX`,
else `c++`) against the installed jaxlib's FFI headers and the oneDNN of the `onednn-devel-cpu-gomp` wheel
(requirements.txt, Linux x86-64), and cached under `~/.cache/cnn_flax` keyed by the sources and the versions (about
6 s, once). Where any of these is missing, `available()` is False, one log line says why, and XLA computes every
convolution and BatchNorm as before.
`CNN_FLAX_ONEDNN=0` switches this path off alone; `CNN_FLAX_FAST_CONV=0` switches off every CPU rewrite.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import site
import subprocess
import sys
import tempfile

import jax
import jaxlib
import numpy as np

_HERE = pathlib.Path(__file__).parent
_SOURCES = [_HERE / "onednn_conv.cc", _HERE / "onednn_batchnorm.cc"]
_HEADER = _HERE / "onednn_common.h"
_HANDLERS = {"forward": "CnnFlaxConvForward", "input_gradient": "CnnFlaxConvInputGradient",
             "kernel_gradient": "CnnFlaxConvKernelGradient", "bn_forward": "CnnFlaxBatchNormForward",
             "bn_backward": "CnnFlaxBatchNormBackward"}
_log = logging.getLogger(__name__)


def _onednn_roots() -> list[pathlib.Path]:
  """Where pip puts the wheel's include/ and lib/: the environment's prefix (a venv's or the system's), or the
  user base for `pip install --user`; CNN_FLAX_ONEDNN_ROOT first, for a oneDNN installed another way."""
  roots = [os.environ.get("CNN_FLAX_ONEDNN_ROOT"), sys.prefix, sys.base_prefix, site.getuserbase()]
  return [pathlib.Path(r) for r in dict.fromkeys(roots) if r]


def _find_onednn() -> tuple[pathlib.Path, pathlib.Path] | None:
  """(include dir, shared library) of the first root holding both."""
  for root in _onednn_roots():
    libraries = sorted((root / "lib").glob("libdnnl.so.*"))
    if (root / "include" / "dnnl.hpp").is_file() and libraries:
      return root / "include", libraries[0]
  return None


def _cache_dir() -> pathlib.Path:
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "cnn_flax"


def _build(compiler: str, include: pathlib.Path, library: pathlib.Path) -> pathlib.Path:
  """The handlers' shared library, compiled unless the cache holds these sources built against these versions."""
  sources = [f.read_text() for f in (*_SOURCES, _HEADER)]
  recipe = "\n".join([*sources, jaxlib.__version__, str(include), str(library), compiler])
  target = _cache_dir() / f"onednn_conv-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.so"
  if target.is_file():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  # Built beside the target and renamed into place: processes starting together never load a half-written file.
  handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
  os.close(handle)
  command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", "-I", jax.ffi.include_dir(), "-I",
             str(include), *map(str, _SOURCES), str(library), f"-Wl,-rpath,{library.parent}", "-o", partial]
  try:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
      raise RuntimeError(f"compiling the oneDNN handlers failed: {done.stderr.strip().splitlines()[-1:]}")
    os.replace(partial, target)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return target


def _load() -> str | None:
  """Builds, loads and registers the handlers once per process; the reason they are unavailable, or None."""
  return _library()[1]


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
  library, reason = _build_and_register()
  if reason is not None:
    _log.info("oneDNN convolutions and BatchNorm unavailable (%s); XLA computes them", reason)
  return library, reason


def _build_and_register() -> tuple[ctypes.CDLL | None, str | None]:
  if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
    return None, f"no oneDNN wheel for {platform.system()} {platform.machine()}"
  compiler = shutil.which(os.environ.get("CXX", "c++"))
  if compiler is None:
    return None, "no C++ compiler (set CXX)"
  found = _find_onednn()
  if found is None:
    return None, "oneDNN not installed (pip install -r requirements.txt)"
  try:
    library = ctypes.cdll.LoadLibrary(str(_build(compiler, *found)))
  except (OSError, RuntimeError, subprocess.SubprocessError) as e:
    return None, str(e)
  for symbol in _HANDLERS.values():
    jax.ffi.register_ffi_target(symbol, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
  for query in (library.CnnFlaxBatchNormReluMaskBytes, library.CnnFlaxBatchNormHasKernels):
    query.restype = ctypes.c_int64
    query.argtypes = [ctypes.c_int64, ctypes.c_int64]
  return library, None


def available() -> bool:
  """Whether `conv` can run: not switched off, and the handlers built and registered (the first call builds)."""
  if os.environ.get("CNN_FLAX_ONEDNN", "1") == "0":
    return False
  return _load() is None


def applies(*arrays) -> bool:
  """Whether oneDNN may compute on these arrays here: static shapes, one device, not inside shard_map, and the
  handlers available. Inside shard_map (per-device BatchNorm) values carry the manual mesh axes they vary over,
  which a custom call's results do not, so a custom VJP's types would not match."""
  static = all(isinstance(d, int) for a in arrays for d in a.shape)
  manual = bool(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()))
  return static and not manual and jax.device_count() == 1 and available()


def _loaded() -> ctypes.CDLL:
  """The handlers' library, built and registered (for callers that did not ask `available()` first)."""
  library, reason = _library()
  if reason is not None:
    raise RuntimeError(f"oneDNN's handlers are unavailable: {reason}")
  return library


def call(handler: str, results, *operands, **attributes):
  """The handler's custom call: `results` one `jax.ShapeDtypeStruct` or a list of them."""
  _loaded()
  return jax.ffi.ffi_call(_HANDLERS[handler], results, vmap_method="sequential")(*operands, **attributes)


def relu_mask_bytes(rows: int, channels: int) -> int:
  """The length of the ReLU mask (oneDNN's workspace) that a (rows, channels) BatchNorm with ReLU keeps."""
  size = _loaded().CnnFlaxBatchNormReluMaskBytes(rows, channels)
  if size < 0:
    raise RuntimeError(f"oneDNN has no BatchNorm with ReLU for {rows} x {channels}")
  return size


@functools.lru_cache(maxsize=None)
def batch_norm_has_kernels(rows: int, channels: int) -> bool:
  """Whether oneDNN generates kernels for a (rows, channels) BatchNorm on this CPU. Without them (a channel count
  that is not a multiple of its vector width) it runs generic loops, slower than XLA (onednn_batchnorm.cc)."""
  library, reason = _library()
  return reason is None and library.CnnFlaxBatchNormHasKernels(rows, channels) == 1


def _call(handler: str, result_shape, a, b, strides, pads, groups: int):
  return call(handler, jax.ShapeDtypeStruct(result_shape, a.dtype), a, b, strides=np.asarray(strides, np.int64),
              padding=np.asarray([p for pair in pads for p in pair], np.int64), groups=np.int64(groups))


def output_shape(lhs_shape, rhs_shape, strides, pads) -> tuple[int, ...]:
  """NHWC output of an NHWC input and an HWIO kernel with explicit (low, high) padding."""
  n, h, w, _ = lhs_shape
  kh, kw, _, out = rhs_shape
  return (n, (h + sum(pads[0]) - kh) // strides[0] + 1, (w + sum(pads[1]) - kw) // strides[1] + 1, out)


def conv(lhs, rhs, strides: tuple[int, int], pads, groups: int = 1):
  """`lax.conv_general_dilated(lhs, rhs, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  feature_group_count=groups)` for float32, undilated, in oneDNN; both gradients in oneDNN too."""
  # oneDNN wants the padding that the output actually reaches: (out - 1) * stride + k = pad_low + in + pad_high.
  # With a stride that does not divide the padded size, the last input rows (or padding) are never read; given
  # the nominal padding, oneDNN's im2col kernels read past the input (AlexNet's 224 px 11x11/4 stem crashed).
  out = output_shape(lhs.shape, rhs.shape, strides, pads)
  exact, crop = [], []
  for axis in range(2):
    low = pads[axis][0]
    high = (out[axis + 1] - 1) * strides[axis] + rhs.shape[axis] - lhs.shape[axis + 1] - low
    exact.append((low, max(high, 0)))
    crop.append(lhs.shape[axis + 1] + min(high, 0))  # a negative high padding: input rows no window reaches
  if crop != list(lhs.shape[1:3]):
    lhs = lhs[:, :crop[0], :crop[1], :]  # autodiff pads the input gradient back with zeros
  return _conv(lhs, rhs, tuple(strides), tuple(exact), groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(lhs, rhs, strides, pads, groups):
  return _call("forward", output_shape(lhs.shape, rhs.shape, strides, pads), lhs, rhs, strides, pads, groups)


def _conv_forward(lhs, rhs, strides, pads, groups):
  return _conv(lhs, rhs, strides, pads, groups), (lhs, rhs)


def _conv_backward(strides, pads, groups, residuals, dy):
  lhs, rhs = residuals
  return (_call("input_gradient", lhs.shape, dy, rhs, strides, pads, groups),
          _call("kernel_gradient", rhs.shape, lhs, dy, strides, pads, groups))


_conv.defvjp(_conv_forward, _conv_backward)
