"""The C allocator setting that makes CPU training and inference fast on Linux.

glibc's malloc hands every block over 32 MiB (and, by its dynamic threshold, many smaller ones)
straight to the kernel with mmap and returns it with munmap when freed. A network's activations are
such blocks, freed and allocated again at every step, so each step page-faults and zero-fills
hundreds of MiB afresh: on a 2-core machine that was a third of the training step's time
(BENCHMARKS.md). Keeping freed memory in the heap instead (no mmap, no automatic trimming) lets the
next step reuse it; peak memory is the same, but the process keeps it until :func:`release`.
``ATTENTION_UNET_KEEP_FREED=0`` in the environment leaves glibc's default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse instead of unmapping them; True when it applied
    (glibc on Linux), False elsewhere, where the allocators do not have this cost, or when
    ``ATTENTION_UNET_KEEP_FREED=0``."""
    libc = _glibc()
    if libc is None or os.environ.get("ATTENTION_UNET_KEEP_FREED") == "0":
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def release() -> None:
    """Give the heap's free memory back to the system (after a measurement or a large image)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
