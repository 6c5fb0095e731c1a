"""Keep freed memory in the process for reuse (glibc's malloc), so large tensors allocated anew
every SGD step stop costing page faults.

glibc serves a block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns
it to the OS on ``free``; its next allocation faults the memory back in page by page, zero-filled.
A population allocates such blocks every step (the stacked gradients of a layer: K x its weights;
activations of K members), so on a CPU it spends as much time faulting pages as computing: one
mlp4 population of 96 members took 3.5 ms per member-step with the default and 1.9 ms with this
(``python -m bench.zoo`` in the repository measures both ways of training in one process, this applied to
both). The price is resident memory: the process keeps its peak heap (+20-25 % peak RSS there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # free memory at the top of the heap above this is given back to the OS
M_MMAP_MAX = -4  # most blocks served by mmap at once; 0: every block comes from the heap


def reuse_freed_memory() -> bool:
    """Make glibc's malloc serve every block from its heap and never trim the heap: freed memory
    stays mapped and is reused by the next allocation. Process-wide; returns True when applied,
    False where there is no glibc (macOS, Windows, musl), where it changes nothing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
