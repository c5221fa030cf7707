"""Compute precision: networks in bf16 where the hardware runs it fast, everything else in fp32.

On CPUs with AMX or AVX512-BF16 (and on GPUs with bf16), a bf16 convolution runs several times
faster than fp32 (``benchmarks/results/precision_cpu.md``). Only the networks compute in bf16:
synthetic images, optimiser state, losses and reductions stay fp32, so the parameters that are
learned keep a full-precision master copy.

``auto`` resolves once per process from what the device supports. ``DDSEARCH_CPU_BF16=0`` (or
``1``) overrides the CPU feature probe, e.g. to check the fp32 fallback on a bf16 machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

import torch

from ddsearch.errors import DDSearchError

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
CPU_OVERRIDE_ENV = "DDSEARCH_CPU_BF16"


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has AMX tiles or AVX512-BF16 instructions (oneDNN uses either)."""
    override = os.environ.get(CPU_OVERRIDE_ENV)
    if override is not None:
        return override.strip().lower() in ("1", "true", "yes", "on")
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    found = [getattr(torch.cpu, name, None) for name in probes]
    if any(probe is not None for probe in found):
        return any(bool(probe()) for probe in found if probe is not None)
    return _cpuinfo_has_bf16()


def _cpuinfo_line(prefix: str) -> str:
    """The value of the first ``/proc/cpuinfo`` line that starts with ``prefix`` ('' if none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as info:
            line = next((line for line in info if line.startswith(prefix)), "")
    except OSError:
        return ""
    return line.split(":", 1)[1].strip() if ":" in line else ""


def cpu_name() -> str:
    """The CPU's model name, so that a recorded timing says which machine it came from."""
    import platform

    return _cpuinfo_line("model name") or platform.processor() or platform.machine()


def _cpuinfo_has_bf16() -> bool:
    """Fallback for torch builds without the probes: read the kernel's CPU flags."""
    flags = _cpuinfo_line("flags").split()
    return any(flag in flags for flag in ("amx_bf16", "avx512_bf16"))


def device_has_fast_bf16(device: torch.device) -> bool:
    """Whether networks on ``device`` should compute in bf16 under ``auto``."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' -> 'bf16' or 'fp32' for ``device``; an explicit choice is kept as given."""
    if precision not in PRECISIONS:
        raise DDSearchError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if device_has_fast_bf16(torch.device(device)) else "fp32"


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype networks compute in for a resolved precision."""
    if precision == "auto":
        raise ValueError("resolve 'auto' with resolve_precision() first")
    return torch.bfloat16 if precision == "bf16" else torch.float32


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """Mixed precision for training with fp32 master weights: a no-op for fp32."""
    device = torch.device(device)
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
