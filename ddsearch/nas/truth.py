"""The ground truth of a NAS search: each candidate trained on real data, cached on disk.

The cache (``<cache>/nas/truth/<key>.json``) holds one entry per candidate, under a key made of
the data split, the schedule and the device type; a later search with more candidates only trains
the new ones, and an interrupted one resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddsearch.atomic_files import lock_file_for, locked, write_text_atomic
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.nas.scoring import CandidateScore, score_candidates
from ddsearch.nas.settings import NASSettings, Parallel
from ddsearch.precision import cpu_name

TRUTH_CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """``$DDSEARCH_CACHE``, else ``~/.cache/ddsearch`` (the same root as PAD's caches)."""
    env = os.environ.get("DDSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ddsearch"


def _tensor_digest(*tensors: torch.Tensor | None) -> str:
    h = hashlib.blake2b(digest_size=12)
    for t in tensors:
        if t is not None:
            h.update(np.ascontiguousarray(t.detach().cpu().long().numpy()).view(np.uint8))
    return h.hexdigest()


def truth_key(data: RealData, settings: NASSettings) -> dict[str, Any]:
    """What a cached ground-truth entry depends on (the candidate name is the entry's own key)."""
    return {
        "version": TRUTH_CACHE_VERSION,
        "dataset": data.name,
        "shape": [data.channels, *data.image_size],
        "train": int(data.train_y.shape[0]),
        "val": int(data.val_y.shape[0]),
        "split": _tensor_digest(data.train_y, data.train_source_idx, data.val_y, data.val_source_idx),
        "device": data.device.type,
        "epochs": settings.truth_epochs,
        "seeds": settings.truth_seeds,
        "lr": settings.lr,
        "batch_size": settings.truth_batch_size,
        "dsa": settings.strategy(data),
        "train_size": settings.truth_train_size,
        "seed": settings.seed,
    }


def truth_cache_path(cache_dir: str | Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / "nas" / "truth" / f"{key['dataset']}-{digest}.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def read_truth_table(path: str | Path) -> tuple[dict[str, Any], dict[str, dict]]:
    """A truth file's key and its entries by candidate, as stored (empty where there is no file yet)."""
    payload = _load(Path(path))
    return payload.get("key", {}), payload.get("results", {})


def _write_cache(path: Path, key: dict[str, Any], new: dict[str, dict]) -> None:
    """Merge ``new`` into the file atomically (another search may have added entries meanwhile)."""
    with locked(lock_file_for(path)):
        stored_key, stored = read_truth_table(path)
        results = (stored if stored_key == key else {}) | new  # another key: a hash collision or a hand-edited file
        write_text_atomic(path, json.dumps({"key": key, "results": results}, indent=1))


def truth_training_set(data: RealData, settings: NASSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The real training split, or a class-balanced random part of it of ``truth_train_size`` images."""
    n = settings.truth_train_size
    if n <= 0 or n >= data.train_y.shape[0]:
        return data.train_x, data.train_y
    per_class = max(1, n // data.num_classes)
    return data.subset(min(per_class, data.min_class_count()), torch.Generator().manual_seed(settings.seed))


def ground_truth(
    names: Sequence[str],
    data: RealData,
    settings: NASSettings,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    parallel: Parallel | None = None,
    progress: bool = True,
    cache_file: str | Path | None = None,
    entry_note: dict[str, Any] | None = None,
) -> list[CandidateScore]:
    """Every candidate trained on real data with the truth schedule; cached entries are reused.

    ``cache_file`` names the cache file itself instead of a file under ``cache_dir``: a truth table
    kept in a repository, which later runs extend and reuse (its key still has to match).
    ``entry_note`` is stored with each new entry (e.g. how fast the machine was that day).
    """
    if settings.truth_epochs < 1:
        raise DDSearchError("the ground truth needs truth_epochs >= 1")
    key = truth_key(data, settings)
    path = Path(cache_file) if cache_file else truth_cache_path(cache_dir or default_cache_dir(), key)
    stored_key, stored = read_truth_table(path)
    if cache_file and path.is_file() and stored_key != key:
        raise DDSearchError(f"{path} holds a ground truth for other data or another schedule; "
                            "pass another file or the settings it was made with")
    cached = stored if use_cache and stored_key == key else {}
    found = {n: CandidateScore(n, list(e["acc"]), float(e["seconds"]), cached=True) for n, e in cached.items() if n in names}
    missing = [n for n in names if n not in found]
    if missing:
        x, y = truth_training_set(data, settings)

        # Ray tasks train with cpus_per_task threads (and the host is then this driver's, not the worker's).
        threads = torch.get_num_threads() if parallel is None else max(1, int(parallel.cpus_per_task))
        where = {"threads": threads, "host": cpu_name(), **(entry_note or {})}

        def keep(score: CandidateScore) -> None:  # written one by one, so an interrupted truth resumes
            if use_cache and score.error is None:
                _write_cache(path, key, {score.arch: {"acc": score.acc, "seconds": score.seconds,
                                                      "date": time.strftime("%Y-%m-%d"), **where}})

        fresh = score_candidates(missing, x, y, data, settings.train_settings(data, truth=True), settings.truth_seeds,
                                 settings.seed, parallel, progress, desc="ground truth", on_result=keep)
        found |= {s.arch: s for s in fresh}
    return [found[n] for n in names]
