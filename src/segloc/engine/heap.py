"""glibc's heap around inference: freed activations kept for the next window, given back after.

A 3D network's activations are tens of MiB each (16 channels of a 96³ window in float32:
56 MiB). glibc serves every allocation above its mmap threshold (at most 32 MiB on 64-bit)
with a fresh ``mmap`` and unmaps it on free, so each window's activations are mapped, faulted
in page by page, zeroed by the kernel and unmapped again. On this 2-core CPU that kernel work
took a third of a forward pass of segloc's 3D U-Net (base 16) on a 96³ window: 0.76 s as is,
0.51 s with mmap off and no trimming (3.2 s of system time in seven passes against 0.27 s), at
a peak 35% higher above the process's baseline (678 MiB against 500;
``python benchmarks/heap.py``, ``benchmarks/results/heap.md``). :func:`reusing_freed_memory`
turns both off for the duration of a ``with`` block and hands the freed pages back to the
system when the last block ends (:func:`release_memory`).

Elsewhere than glibc on Linux (macOS, Windows, musl) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["release_memory", "reusing_freed_memory"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# glibc's defaults, or what the process was started with (the variables glibc itself reads)
_DEFAULTS = {
    _M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", 128 * 1024),
    _M_MMAP_MAX: ("MALLOC_MMAP_MAX_", 65536),
}


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and other C libraries have neither
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()
_LOCK = threading.Lock()
_DEPTH = 0


def release_memory() -> None:
    """Give freed heap memory back to the system (``malloc_trim``).

    glibc keeps what a thread freed in that thread's arena for reuse, so after a burst of
    predictions a server's resident memory would stay at its peak. A no-op elsewhere.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _default(param: int) -> int:
    name, value = _DEFAULTS[param]
    try:
        return int(os.environ.get(name, value))
    except ValueError:
        return value


@contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """Within the block, large blocks come from the heap and freed ones stay there for reuse.

    On entry: ``mallopt(M_MMAP_MAX, 0)`` (no allocation is mapped on its own) and an
    unbounded ``M_TRIM_THRESHOLD`` (the heap's top is not trimmed). On leaving the outermost
    block (blocks nest and may overlap across threads): both back to glibc's defaults or the
    process's ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_``, then :func:`release_memory`.
    Setting the trim threshold also fixes glibc's mmap threshold where it stands (it no longer
    grows with the sizes freed). A no-op where the C library is not glibc.
    """
    global _DEPTH
    if _LIBC is None:
        yield
        return
    with _LOCK:
        if _DEPTH == 0:
            _LIBC.mallopt(_M_MMAP_MAX, 0)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                for param in _DEFAULTS:
                    _LIBC.mallopt(param, _default(param))
                release_memory()
