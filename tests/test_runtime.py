"""Process settings: glibc's allocator is tuned by hfdistac's own processes only, and fitted to the tower loaded."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from tests._fixtures_models import make_base

CHILD = r"""
import json, resource, sys, torch
from hfdistac import runtime
from hfdistac.checkpoints import load_base

def faults_of_reuse(n=40):
    # a 4 MB tensor made and freed n times: served from the heap it is faulted in once; as a fresh mapping, all
    # of its 1,024 pages every time
    torch.ones(1 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        torch.ones(1 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

out = {}
load_base(sys.argv[1])
out["library_only"] = runtime._allocator
out["tuned"] = runtime.tune_allocator()
out["after_tune"] = runtime._allocator
out["faults_tuned"] = faults_of_reuse()
load_base(sys.argv[1])
out["after_small_tower"] = runtime._allocator
load_base(sys.argv[2])
out["after_large_tower"] = runtime._allocator
out["faults_released"] = faults_of_reuse()
load_base(sys.argv[1])
out["after_small_again"] = runtime._allocator
print(json.dumps(out))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt's thresholds are glibc's")
def test_the_allocator_recycles_for_small_towers_and_releases_for_large_ones(tmp_path):
    small = make_base(tmp_path / "small", hidden=32)  # largest float32 matrix 32 x 128: 16 KB
    large = make_base(tmp_path / "large", hidden=256)  # 256 x 1024: exactly 1 MB
    proc = subprocess.run([sys.executable, "-c", CHILD, str(small), str(large)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["library_only"] is None  # a library call leaves the caller's allocator alone
    assert out["tuned"] and out["after_tune"] == "recycle"
    assert out["after_small_tower"] == "recycle"
    assert out["after_large_tower"] == "release"
    assert out["after_small_again"] == "release"  # never goes back within a process
    pages = 40 * (4 << 20) // 4096  # every page of every 4 MB block
    assert out["faults_tuned"] < 0.05 * pages, out  # reused from the heap
    assert out["faults_released"] > 0.9 * pages, out  # mapped afresh and given back each time
