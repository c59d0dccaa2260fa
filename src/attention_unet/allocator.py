"""The C allocator setting that makes CPU training and inference fast on Linux.

glibc's malloc hands every block over 32 MiB (and, by its dynamic threshold, many smaller ones)
straight to the kernel with mmap and returns it with munmap when freed. A network's activations are
such blocks, freed and allocated again at every step, so each step page-faults and zero-fills
hundreds of MiB afresh: on a 2-core machine that was a third of the training step's time
(BENCHMARKS.md). Keeping freed memory in the heap instead (no mmap, no automatic trimming) lets the
next step reuse it. The heap then holds on to it, so training keeps it for the whole process and
prediction only while the network runs (:func:`kept`), handing it back before the image-sized
post-processing. ``ATTENTION_UNET_KEEP_FREED=0`` in the environment leaves glibc's default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h
_DEFAULT = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}  # glibc's (static) defaults
_KEEP = {_M_TRIM_THRESHOLD: 2**31 - 1, _M_MMAP_MAX: 0}
_state = {"kept": False, "inside": 0}  # inside: blocks in kept() now (images predicted side by side)
_lock = threading.Lock()


@cache  # find_library runs ldconfig: once per process, not once per predicted image
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def keep_freed_memory(keep: bool = True) -> bool:
    """Make glibc keep freed blocks for reuse (``keep``) or map and return large blocks again;
    True when the setting applied: glibc on Linux (other allocators do not have this cost), and
    not switched off by ``ATTENTION_UNET_KEEP_FREED=0``."""
    libc = _glibc()
    if libc is None or (keep and os.environ.get("ATTENTION_UNET_KEEP_FREED") == "0"):
        return False
    applied = all(libc.mallopt(param, value) for param, value in (_KEEP if keep else _DEFAULT).items())
    _state["kept"] = keep and applied
    return applied


@contextmanager
def kept() -> Iterator[None]:
    """Keep freed memory inside the block; when the last block of those running in threads ends,
    unless it was kept before (or the setting does not apply here), map large blocks again and
    give the heap's free memory back."""
    with _lock:
        if not _state["inside"]:
            _state["before"] = _state["kept"]
            _state["applied"] = keep_freed_memory()
        _state["inside"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["inside"] -= 1
            if not _state["inside"] and _state["applied"] and not _state["before"]:
                keep_freed_memory(False)
                release()


def release() -> None:
    """Give the heap's free memory back to the system (after a measurement or a large image)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
