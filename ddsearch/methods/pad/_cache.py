"""On-disk cache of PAD's scores and expert buffers: keys, verified safetensors files, locks.

A cache file is written atomically (temporary name + rename) with a checksum of its tensors and
the key it belongs to in its metadata. Reading checks the header, the key, the expected shapes and
the checksum, and hands back memory-mapped tensors, so a missing, truncated, foreign or bit-flipped
file is never used: the caller rebuilds it or reports a :class:`CacheError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ddsearch import atomic_files
from ddsearch.atomic_files import replacing
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError

FORMAT_VERSION = "1"
_NP_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


class CacheError(DDSearchError):
    """A cache file is missing, unreadable, or does not hold what its key promises."""


def cache_root(cache_dir: str | None) -> Path:
    """``cache_dir``, else ``$DDSEARCH_CACHE``, else ``~/.cache/ddsearch``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DDSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ddsearch"


def _digest_tensor(h: "hashlib._Hash", tensor: torch.Tensor) -> None:
    h.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).view(np.uint8))


def data_identity(data: RealData) -> dict[str, Any]:
    """What identifies the training split a cache entry was built from.

    Name, shapes, class names, normalisation, and a hash of the labels and of which source images
    form the training split (so the validation split's size and seed are covered). No float
    reductions over the images, so the key is the same on every device.
    """
    h = hashlib.blake2b(digest_size=16)
    _digest_tensor(h, data.train_y.long())
    if data.train_source_idx is not None:
        _digest_tensor(h, data.train_source_idx.long())
    return {
        "name": data.name,
        "train_size": int(data.train_x.shape[0]),
        "shape": [data.channels, *data.image_size],
        "classes": list(data.class_names),
        "mean": [round(float(m), 6) for m in data.mean],
        "std": [round(float(s), 6) for s in data.std],
        "split": h.hexdigest(),
    }


def make_key(payload: Mapping[str, Any]) -> str:
    """A short content hash of a JSON-able description."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a tuple of parts (run seed, purpose, index), independent of hash seeds."""
    text = json.dumps([str(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(tensors):
        h.update(name.encode())
        _digest_tensor(h, tensors[name])
    return h.hexdigest()


def write_verified(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` with ``metadata`` plus a checksum, atomically (no half-written files)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**metadata, "ddsearch-cache": FORMAT_VERSION, "checksum": checksum(tensors)}
    with replacing(path) as partial:
        save_file(tensors, str(partial), metadata=meta)
    return path


def _mapped(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as copy-on-write memory maps (no read into RAM)."""
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _NP_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end == begin:
            out[name] = torch.from_numpy(np.zeros(shape, dtype=dtype))
            continue
        array = np.memmap(path, dtype=dtype, mode="c", offset=base + begin, shape=shape)
        out[name] = torch.from_numpy(array)
    return out


def read_verified(
    path: Path, expect_meta: Mapping[str, str], expect_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a cache file after checking header, metadata, shapes and checksum; else CacheError."""
    if not path.is_file():
        raise CacheError(f"cache file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            names = set(handle.keys())
        tensors = _mapped(path)
    except (SafetensorError, OSError, ValueError, KeyError, struct.error) as err:
        raise CacheError(f"cache file {path} is corrupt or unreadable ({err})") from None
    if meta.get("ddsearch-cache") != FORMAT_VERSION:
        raise CacheError(f"{path} is not a ddsearch cache file of version {FORMAT_VERSION}")
    for key, value in expect_meta.items():
        if meta.get(key) != value:
            raise CacheError(f"cache file {path} has {key}={meta.get(key)!r}, expected {value!r}")
    if names != set(expect_shapes):
        raise CacheError(f"cache file {path} holds {sorted(names)}, expected {sorted(expect_shapes)}")
    for name, shape in expect_shapes.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise CacheError(
                f"cache file {path}: '{name}' has shape {tuple(tensors[name].shape)}, expected {tuple(shape)}"
            )
    if checksum(tensors) != meta.get("checksum"):
        raise CacheError(f"cache file {path} is corrupt (checksum mismatch)")
    return tensors, meta


def locked(directory: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive inter-process lock on ``directory`` (so concurrent trials build an entry once)."""
    return atomic_files.locked(directory / ".lock")
