"""Huge pages for the CPU step's buffers: the entry points restart Python once with glibc's `hugetlb` tunable.

XLA:CPU allocates a step's temporaries afresh at every execution. glibc serves blocks that large with `mmap` and
returns them with `munmap`, so every step writes to new memory and the kernel faults it in 4 KB at a time: a
MobileNet v1 training step at batch 16, 224 px, took about 165,000 page faults (650 MB). Our reading of where
they cost: in the forward pass, whose outputs are the first writes into a fresh buffer (oneDNN's forward BatchNorm
ran 2-5x slower than its backward on the same shape, which writes into pages the forward pass already touched).
With `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` malloc asks for transparent huge pages on those blocks
(`madvise(MADV_HUGEPAGE)`), the kernel faults them in 2 MB at a time, and the faults drop about 100-fold; the peak
memory does not change. Measured in benchmarks/README.md (the peers section).

glibc reads its tunables once, when the process starts, so setting the variable from Python is too late: `reexec()`
sets it and replaces the process with the same command (before JAX or anything heavy is imported; it costs a
fraction of a second). It does nothing where it cannot help (not Linux with glibc >= 2.35, transparent huge pages
set to `never`), when the user's GLIBC_TUNABLES already says `glibc.malloc.hugetlb`, or with CNN_FLAX_HUGE_PAGES=0.
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
SWITCH = "CNN_FLAX_HUGE_PAGES"  # "0": leave malloc as it is
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def transparent_huge_pages() -> str:
  """The kernel's mode, the bracketed word of `always [madvise] never`; "" where there is no such file."""
  try:
    with open(THP_MODE_FILE) as f:
      words = f.read().split()
  except OSError:
    return ""
  return next((w.strip("[]") for w in words if w.startswith("[")), "")


def _glibc_version() -> tuple[int, ...]:
  name, version = platform.libc_ver()
  if name != "glibc" or not version:
    return ()
  return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _tunables(environ) -> dict[str, str]:
  """GLIBC_TUNABLES (`name=value:name=value`) as a dict."""
  pairs = (item.partition("=") for item in environ.get("GLIBC_TUNABLES", "").split(":") if item)
  return {name: value for name, _, value in pairs}


def in_effect(environ=None) -> bool:
  """Whether this process's malloc was started with huge pages on (by `reexec` or by the user)."""
  return _tunables(os.environ if environ is None else environ).get(TUNABLE, "0") != "0"


def wanted_tunables(environ, thp_mode: str, glibc: tuple[int, ...]) -> str | None:
  """The GLIBC_TUNABLES value to restart with, or None to leave the process as it is."""
  current = environ.get("GLIBC_TUNABLES", "")
  if environ.get(SWITCH) == "0" or TUNABLE in _tunables(environ):  # the user's choice (or our restart) stands
    return None
  if glibc < (2, 35) or thp_mode not in ("always", "madvise"):  # the tunable exists from 2.35
    return None
  return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def reexec() -> None:
  """Restarts this command with huge pages for malloc's large blocks, where that applies; otherwise returns."""
  if not sys.platform.startswith("linux"):
    return
  tunables = wanted_tunables(os.environ, transparent_huge_pages(), _glibc_version())
  if tunables is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:  # the same interpreter flags, script or -m module, and arguments
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "GLIBC_TUNABLES": tunables})
  except OSError:  # no restart, no harm: the run goes on with 4 KB pages
    pass
