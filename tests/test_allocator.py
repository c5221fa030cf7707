"""The allocator tuning is applied on glibc and can be switched off."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from ddsearch.allocator import tune_malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists only on Linux")
def test_glibc_accepts_the_thresholds_and_reuses_a_freed_block(monkeypatch) -> None:
    monkeypatch.delenv("DDSEARCH_MALLOC_TUNING", raising=False)
    assert tune_malloc() is True
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 16 << 20  # an activation-sized block: above glibc's default mmap threshold, below ours
    first = libc.malloc(size)
    libc.free(first)
    second = libc.malloc(size)
    libc.free(second)
    assert first == second  # served again from the heap, not a fresh mapping the kernel must zero


def test_opt_out_leaves_glibc_alone(monkeypatch) -> None:
    monkeypatch.setenv("DDSEARCH_MALLOC_TUNING", "0")
    assert tune_malloc() is False
