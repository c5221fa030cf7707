"""Files and folders ddsearch reads, writes and deletes, checked before any work.

Why one module: every command names input files, output files and folders it writes to (state,
tracking store, caches). A wrong path must give one clear line before anything runs, and ddsearch
must never delete what it did not create. So:

- :func:`check_input_file` tells "missing" from "a directory" from "unreadable";
- :func:`check_output_file` and :func:`ensure_writable_dir` fail before the work, not after it;
- :func:`make_owned_dir` writes a marker file into each folder ddsearch creates, and
  :func:`remove_owned_dir` deletes only such folders, and only inside a given parent.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from ddsearch.errors import DDSearchError

MARKER = ".ddsearch-owned"


def check_input_file(path: str | Path, what: str, hint: str = "") -> Path:
    """``path`` as a readable regular file, or one line that says what is wrong with it."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if path.is_dir():
        raise DDSearchError(f"{what} {path} is a directory, not a file{tail}")
    if not path.exists():
        raise DDSearchError(f"{what} {path} does not exist{tail}")
    if not path.is_file():
        raise DDSearchError(f"{what} {path} is not a regular file{tail}")
    if not os.access(path, os.R_OK):
        raise DDSearchError(f"{what} {path} is not readable (permission denied)")
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """Fail now, not after the work, when ``path`` cannot be written (missing folder, no permission)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise DDSearchError(f"{what} {path} is a directory; give a file name")
    if not parent.is_dir():
        raise DDSearchError(f"{what} {path}: the folder {parent} does not exist; create it first")
    if path.exists() and not os.access(path, os.W_OK) or not os.access(parent, os.W_OK | os.X_OK):
        raise DDSearchError(f"{what} {path} is not writable (permission denied)")
    return path


def ensure_writable_dir(path: str | Path, what: str, mode: int = 0o777) -> Path:
    """Create ``path`` (and parents) if needed and check that ddsearch may write into it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DDSearchError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as err:
        raise DDSearchError(f"cannot create the {what} {path}: {err.strerror or err}; "
                            f"choose a folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DDSearchError(f"the {what} {path} is not writable (permission denied); choose a folder you can write to")
    return path


def check_creatable_dir(path: str | Path, what: str) -> Path:
    """Like :func:`ensure_writable_dir` but creates nothing (for --dry-run and early checks)."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DDSearchError(f"cannot create the {what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DDSearchError(f"the {what} {path} is not writable ({existing}: permission denied); "
                            f"choose a folder you can write to")
    return path


def make_owned_dir(path: str | Path, mode: int = 0o700) -> Path:
    """Create ``path`` with a marker file saying ddsearch made it (so it may delete it later)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    marker = path / MARKER
    if not marker.exists():
        marker.write_text("created by ddsearch; ddsearch may delete this folder when it starts a study afresh\n")
    return path


def is_owned(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child != parent and parent in child.parents


def remove_owned_dir(path: str | Path, within: str | Path) -> None:
    """Delete ``path`` only if ddsearch created it (marker) and it lies strictly inside ``within``.

    An empty folder is removed as well; anything else (no marker, a symlink, a folder outside
    ``within``) is refused with one line, and nothing is deleted.
    """
    path, within = Path(path), Path(within)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not _inside(path, within):
        raise DDSearchError(f"refusing to delete {path}: it is not a folder inside {within}; remove it yourself")
    if is_owned(path):
        shutil.rmtree(path)
        return
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        return
    raise DDSearchError(f"refusing to delete {path}: ddsearch did not create it (no {MARKER} file); "
                        f"move it away or choose another study name or state_dir")


def check_owner(path: str | Path, what: str) -> None:
    """Refuse a folder another user owns: state folders hold pickles that a resume unpickles."""
    path = Path(path)
    if not hasattr(os, "getuid") or not path.exists():
        return
    info = path.stat()
    if info.st_uid != os.getuid():
        raise DDSearchError(f"the {what} {path} belongs to another user (uid {info.st_uid}); ddsearch resumes only "
                            f"from its own state, since resuming unpickles files from it")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise DDSearchError(f"the {what} {path} is writable by other users; run `chmod go-w {path}` "
                            f"(resuming unpickles files from it)")


def new_dirs_between(root: Path, existed: set[Path]) -> list[Path]:
    """Folders under ``root`` (and ``root`` itself) that were not in ``existed``, deepest first."""
    found = [root] if root.is_dir() else []
    if root.is_dir():
        found += [p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()]
    return sorted((p for p in found if p not in existed), key=lambda p: len(p.parts), reverse=True)


def existing_dirs(root: Path) -> set[Path]:
    if not root.is_dir():
        return set()
    return {root, *(p for p in root.rglob("*") if p.is_dir())}


def remove_empty_new_dirs(root: Path, existed: set[Path]) -> None:
    """After a failed download: remove the empty folders it created, and nothing else."""
    for folder in new_dirs_between(root, existed):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass
