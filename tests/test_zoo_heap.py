"""Training keeps freed memory for reuse (zoo/heap.py) and gives it back when it ends, so that the
HTT that follows in the same process (weightsim-run) does not carry the training's peak heap."""

import subprocess
import sys

import pytest

from weightsim.zoo.heap import _libc

SCRIPT = r"""
import numpy as np
from weightsim.zoo.heap import freed_memory_reused

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

base = rss_mb()
with freed_memory_reused():
    a = np.ones(300 * 2**20 // 8)  # 300 MiB from the heap (no mmap inside)
    del a
    inside = rss_mb()
after = rss_mb()
print(inside - base, after - base)
"""


@pytest.mark.skipif(_libc() is None, reason="glibc's malloc only (Linux): elsewhere the heap settings change nothing")
def test_freed_memory_is_kept_while_training_and_given_back_after():
    # its own process: the malloc settings are process-wide
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    inside, after = map(float, out.stdout.split())
    assert inside > 250, f"freed 300 MiB not kept inside (RSS +{inside:.0f} MiB): reuse is not applied"
    assert after < 50, f"RSS still +{after:.0f} MiB after the context: the freed heap was not given back"
