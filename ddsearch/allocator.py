"""Keep freed memory in the process: on the CPU, page faults cost as much as the maths.

glibc returns every freed block above its mmap threshold (128 KiB at first) to the kernel, so a
training step that allocates a fresh 10-30 MB activation per operation pays for the kernel to zero
those pages again on every step. Raising the mmap threshold to its 32 MiB maximum and the trim
threshold to 1 GiB lets such blocks be reused; it halved the synthetic branch of a DataDAM step
on this project's CPU (``benchmarks/results/precision_cpu.md``). ``DDSEARCH_MALLOC_TUNING=0``
leaves glibc's defaults alone. Other C libraries are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


def tune_malloc() -> bool:
    """Apply the thresholds above once per process; True if glibc accepted them."""
    if os.environ.get("DDSEARCH_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, ...): nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    accepted = [mallopt(option, value) for option, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))]
    return all(accepted)
