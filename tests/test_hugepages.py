"""The entry points' restart with glibc's huge-page tunable (cnn_flax/hugepages.py): when it happens, what it keeps."""
import os
import subprocess
import sys

import pytest

from cnn_flax import hugepages
from tests.conftest import REPO_ROOT

MODERN = (2, 36)


@pytest.mark.parametrize("environ, thp_mode, glibc, expected", [
    ({}, "madvise", MODERN, "glibc.malloc.hugetlb=1"),
    ({}, "always", MODERN, "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", MODERN,
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),  # the user's other tunables are kept
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", MODERN, None),  # the user's choice stands
    ({"CNN_FLAX_HUGE_PAGES": "0"}, "madvise", MODERN, None),
    ({}, "never", MODERN, None),  # the kernel would ignore the advice
    ({}, "", MODERN, None),  # no transparent huge pages at all
    ({}, "madvise", (2, 34), None),  # the tunable does not exist yet
    ({}, "madvise", (), None),  # not glibc (musl)
])
def test_when_the_tunable_is_wanted(environ, thp_mode, glibc, expected):
  assert hugepages.wanted_tunables(environ, thp_mode, glibc) == expected


@pytest.mark.parametrize("tunables, expected", [
    ("glibc.malloc.hugetlb=1", True), ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2", True),
    ("glibc.malloc.hugetlb=0", False),  # named, but off: what benchmark.py reports as `huge_pages`
    ("glibc.malloc.arena_max=2", False), ("", False)])
def test_in_effect_reads_the_tunables_value(tunables, expected):
  assert hugepages.in_effect({"GLIBC_TUNABLES": tunables}) is expected


SCRIPT = """
import os, sys
print("started", flush=True)
from cnn_flax import hugepages
hugepages.reexec()
print("running", sys.argv[1:], os.environ.get("GLIBC_TUNABLES"), flush=True)
"""


def _run(tmp_path, **env):
  script = tmp_path / "entry.py"
  script.write_text(SCRIPT)
  environ = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hugepages.SWITCH)}
  done = subprocess.run([sys.executable, "-u", str(script), "--config.x=1", "a b"], cwd=REPO_ROOT, capture_output=True,
                        text=True, env={**environ, "PYTHONPATH": str(REPO_ROOT), **env}, check=True)
  return done.stdout.splitlines()


def test_the_restart_keeps_the_command_and_runs_it_once(tmp_path):
  if hugepages.wanted_tunables({}, hugepages.transparent_huge_pages(), hugepages._glibc_version()) is None:
    pytest.skip("this machine gets no restart (no glibc >= 2.35, or transparent huge pages off)")
  lines = _run(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_max=4")
  assert lines == ["started", "started",  # once before the restart, once after it
                   "running ['--config.x=1', 'a b'] glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1"]


def test_the_switch_turns_the_restart_off(tmp_path):
  assert _run(tmp_path, CNN_FLAX_HUGE_PAGES="0") == ["started", "running ['--config.x=1', 'a b'] None"]
