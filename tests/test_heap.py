"""segloc.engine.heap: large blocks come from the heap inside the block, mapped outside it.

glibc's ``mallinfo2`` is the oracle: ``hblkhd`` counts the bytes of blocks mapped on their
own. A 64 MiB NumPy array (NumPy allocates its data with malloc) is one such block under
glibc's defaults and none inside :func:`reusing_freed_memory`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

import numpy as np
import pytest
import torch

from segloc.engine import heap

BIG = 64 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return libc


LIBC = _libc()
pytestmark = pytest.mark.skipif(LIBC is None, reason="needs glibc >= 2.33 (mallinfo2)")


def _mapped_while_held() -> int:
    """Bytes mapped on their own while a fresh 64 MiB array is alive."""
    before = LIBC.mallinfo2().hblkhd
    a = np.ones(BIG, dtype=np.uint8)
    mapped = LIBC.mallinfo2().hblkhd - before
    del a
    return mapped


def test_a_large_block_is_mapped_outside_and_from_the_heap_inside():
    assert _mapped_while_held() >= BIG
    with heap.reusing_freed_memory():
        assert _mapped_while_held() == 0
    # glibc's defaults are back
    assert _mapped_while_held() >= BIG


def test_blocks_nest_and_only_the_outermost_restores():
    with heap.reusing_freed_memory():
        with heap.reusing_freed_memory():
            assert _mapped_while_held() == 0
        assert _mapped_while_held() == 0
    assert _mapped_while_held() >= BIG


def test_a_block_in_another_thread_keeps_the_setting_until_both_end():
    entered, release = threading.Event(), threading.Event()

    def other():
        with heap.reusing_freed_memory():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(10)
    with heap.reusing_freed_memory():
        pass
    try:
        # this thread's block has ended, the other thread's has not
        assert _mapped_while_held() == 0
    finally:
        release.set()
        t.join(10)
    assert _mapped_while_held() >= BIG


def test_the_setting_is_restored_when_the_block_raises():
    with pytest.raises(RuntimeError, match="inside"):
        with heap.reusing_freed_memory():
            raise RuntimeError("inside")
    assert _mapped_while_held() >= BIG


def test_the_process_environment_is_what_is_restored(monkeypatch):
    # MALLOC_MMAP_MAX_=0 as the process's own choice: no block is mapped after the block either
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    with heap.reusing_freed_memory():
        pass
    try:
        assert _mapped_while_held() == 0
    finally:
        monkeypatch.delenv("MALLOC_MMAP_MAX_")
        with heap.reusing_freed_memory():
            pass
    assert _mapped_while_held() >= BIG


def test_sliding_window_inference_runs_its_windows_inside_the_block():
    from segloc.engine.windows import sliding_window_inference

    seen = []

    def model(x: torch.Tensor) -> torch.Tensor:
        seen.append(_mapped_while_held())
        return torch.zeros(x.shape[0], 2, *x.shape[2:])

    sliding_window_inference(model, torch.zeros(1, 1, 40, 40), (32, 32), reuse_constant=False)
    assert seen and all(m == 0 for m in seen)
    assert _mapped_while_held() >= BIG
