"""Keep freed memory in the process for reuse (glibc's malloc), so large tensors allocated anew
every SGD step stop costing page faults.

glibc serves a block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns
it to the OS on ``free``; its next allocation faults the memory back in page by page, zero-filled.
A population allocates such blocks every step (the stacked gradients of a layer: K x its weights;
activations of K members), so on a CPU it spends as much time faulting pages as computing: one
mlp4 population of 96 members took 3.5 ms per member-step with the default and 1.9 ms with this
(``python -m bench.zoo`` in the repository measures both ways of training in one process, this applied to
both). The price is resident memory: the process keeps its peak heap (+20-25 % peak RSS there), so
training runs inside ``freed_memory_reused()``, which gives the heap back when it ends: what runs
after it in the same process (HTT in weightsim-run) starts from the memory it really holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from contextlib import contextmanager
from typing import Iterator

M_TRIM_THRESHOLD = -1  # free memory at the top of the heap above this is given back to the OS
M_MMAP_MAX = -4  # most blocks served by mmap at once; 0: every block comes from the heap
DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults (mallopt(3))
DEFAULT_MMAP_MAX = 65536


def _libc():
    """glibc, or None where there is none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def reuse_freed_memory() -> bool:
    """Make glibc's malloc serve every block from its heap and never trim the heap: freed memory
    stays mapped and is reused by the next allocation. Process-wide; returns True when applied,
    False where there is no glibc (macOS, Windows, musl), where it changes nothing."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def give_back_freed_memory() -> bool:
    """Undo ``reuse_freed_memory``: glibc's default thresholds again, and the heap's free memory
    returned to the OS now (malloc_trim). Returns True when applied, False without glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)
    return True


@contextmanager
def freed_memory_reused(enabled: bool = True) -> Iterator[None]:
    """Inside: freed memory kept for reuse (fast training); after: given back to the OS."""
    if not enabled:
        yield
        return
    reuse_freed_memory()
    try:
        yield
    finally:
        give_back_freed_memory()
