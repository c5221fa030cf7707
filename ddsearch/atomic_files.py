"""Whole-or-nothing file writes and an inter-process lock, shared by every file ddsearch rewrites.

Why one module: checkpoints, synsets, PAD caches, the NAS truth table, Tune's session file and the
benchmark records are all rewritten while other processes (trials, a resumed driver, a second
benchmark) may read or merge into them. Each must either see the old file or the new one, never a
half-written one, and a read-merge-write must not drop what another process merged meanwhile.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    The temporary name carries the process id, so two processes never write into one temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield partial
        os.replace(partial, path)  # atomic on POSIX and Windows: readers see the old file or the new
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all."""
    with replacing(path) as partial:
        partial.write_text(text)
    return Path(path)


@contextlib.contextmanager
def locked(lock_file: str | Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``lock_file`` (created if missing) for the block."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, the atomic writes still keep files whole
        yield
        return
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_file_for(path: str | Path) -> Path:
    """The hidden lock file that guards read-merge-writes of ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")
