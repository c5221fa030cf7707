"""Rank candidates on a proxy set, on a random real control, and on real data (the ground truth).

Every ranking uses one protocol: each candidate is trained from scratch ``seeds`` times with the
evaluator's recipe (:func:`ddsearch.evaluate.train_network`: SGD, step decay, DSA) and scored by
its mean accuracy on the real validation split. Network ``r`` of a candidate starts from the same
initial weights in every ranking (seed ``seed * 1000 + r``), so rankings differ by their
training data only.

The ground truth is cached on disk (``<cache>/nas/truth/<key>.json``), one entry per candidate,
under a key made of the data split, the schedule and the device type; a later search with more
candidates only trains the new ones, and an interrupted one resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.evaluate import TrainSettings, accuracy, build_network, train_network
from ddsearch.precision import resolve_precision
from ddsearch.nas.metrics import Agreement, agreement, ranks
from ddsearch.nas.settings import NASSettings, Parallel
from ddsearch.nas.spaces import Skipped
from ddsearch.synset import SyntheticSet

TRUTH_CACHE_VERSION = "1"


@dataclass
class CandidateScore:
    """Validation accuracies of one candidate's trainings, and the seconds they took."""

    arch: str
    acc: list[float] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    cached: bool = False

    @property
    def mean(self) -> float:
        return float(np.mean(self.acc)) if self.acc and self.error is None else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.acc)) if self.acc and self.error is None else float("nan")


def train_candidate(arch: str, x: torch.Tensor, y: torch.Tensor, data: RealData, settings: TrainSettings,
                    seeds: int, seed: int) -> CandidateScore:
    """Train ``arch`` on (x, y) ``seeds`` times; a failure is recorded on the score, not raised."""
    score = CandidateScore(arch)
    start = time.perf_counter()
    precision = resolve_precision(settings.precision, x.device)
    try:
        for r in range(seeds):
            run_seed = seed * 1000 + r
            net = build_network(arch, data, run_seed, x.device)
            train_network(net, x, y, settings, run_seed)
            score.acc.append(accuracy(net, data.val_x, data.val_y, precision=precision))
    except Exception as err:  # noqa: BLE001 - one broken candidate must not end a 720-candidate search
        score.error = f"{type(err).__name__}: {err}"
    score.seconds = time.perf_counter() - start
    return score


def _candidate_task(arch: str, x: torch.Tensor, y: torch.Tensor, data: RealData, settings: TrainSettings,
                    seeds: int, seed: int, threads: int) -> CandidateScore:
    """A Ray task: the shared tensors arrive on the CPU and move to this worker's device."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, threads))
    data = data.to(device)
    return train_candidate(arch, x.to(device), y.to(device), data, settings, seeds, seed)


def score_candidates(
    names: Sequence[str],
    x: torch.Tensor,
    y: torch.Tensor,
    data: RealData,
    settings: TrainSettings,
    seeds: int,
    seed: int = 0,
    parallel: Parallel | None = None,
    progress: bool = True,
    desc: str = "candidates",
    on_result: Callable[[CandidateScore], None] | None = None,
) -> list[CandidateScore]:
    """Score every candidate on (x, y): sequentially, or as Ray tasks with ``parallel``.

    ``on_result`` hears each score as soon as it is done (e.g. to cache it), in completion order.
    """
    if parallel is None:
        scores = []
        for arch in tqdm(names, desc=desc, disable=not progress, unit="arch"):
            scores.append(train_candidate(arch, x, y, data, settings, seeds, seed))
            if on_result is not None:
                on_result(scores[-1])
        return scores
    from ddsearch.search.parallel import ray_map

    shared = {"x": x.cpu(), "y": y.cpu(), "data": data.to("cpu"), "settings": settings, "seeds": seeds,
              "seed": seed, "threads": max(1, int(parallel.cpus_per_task))}
    return ray_map(_candidate_task, list(names), shared, num_cpus=parallel.cpus_per_task,
                   num_gpus=parallel.gpus_per_task, address=parallel.address, max_cpus=parallel.max_cpus,
                   progress=progress, desc=desc, on_result=None if on_result is None else (lambda _, r: on_result(r)))


# ---- proxy and control ------------------------------------------------------------------------

def control_set(data: RealData, proxy: SyntheticSet, seed: int = 0) -> SyntheticSet:
    """A random real subset with as many images of each class as the proxy (hard labels)."""
    counts = torch.bincount(proxy.hard_labels.cpu().long(), minlength=data.num_classes).tolist()
    generator = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, n in enumerate(counts):
        if n == 0:
            continue
        picked = data.sample(c, n, generator)
        if picked.shape[0] < n:
            raise DDSearchError(f"the control needs {n} real images of class {data.class_names[c]!r}, "
                                f"but the training split has {picked.shape[0]}")
        xs.append(picked)
        ys.append(torch.full((n,), c, dtype=torch.long, device=data.device))
    return SyntheticSet(images=torch.cat(xs), labels=torch.cat(ys), num_classes=data.num_classes,
                        dataset=data.name, mean=tuple(data.mean), std=tuple(data.std), method="random",
                        class_names=list(data.class_names))


def score_set(names: Sequence[str], synset: SyntheticSet, data: RealData, settings: NASSettings,
              parallel: Parallel | None = None, progress: bool = True, desc: str = "proxy") -> list[CandidateScore]:
    """Rank candidates on a synthetic (or control) set; a learned lr in the set is used if allowed."""
    synset.check_fits(data)
    lr = float(synset.lr) if (settings.use_learned_lr and synset.lr is not None) else None
    x = synset.images.detach().to(data.device)
    y = synset.labels.detach().to(data.device)
    return score_candidates(names, x, y, data, settings.train_settings(data, lr=lr), settings.seeds, settings.seed,
                            parallel, progress, desc)


# ---- ground truth -------------------------------------------------------------------------------

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


def _read_cache(path: Path, key: dict[str, Any]) -> dict[str, dict]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if payload.get("key") != key:  # a hash collision or a hand-edited file: never trust it
        return {}
    return payload.get("results", {})


def _write_cache(path: Path, key: dict[str, Any], new: dict[str, dict]) -> None:
    """Merge ``new`` into the file atomically (another search may have added entries meanwhile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    results = _read_cache(path, key) | new
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "results": results}, indent=1))
    tmp.replace(path)


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
) -> list[CandidateScore]:
    """Every candidate trained on real data with the truth schedule; cached entries are reused."""
    if settings.truth_epochs < 1:
        raise DDSearchError("the ground truth needs truth_epochs >= 1")
    key = truth_key(data, settings)
    path = truth_cache_path(cache_dir or default_cache_dir(), key)
    cached = _read_cache(path, key) if use_cache else {}
    found = {n: CandidateScore(n, list(e["acc"]), float(e["seconds"]), cached=True) for n, e in cached.items() if n in names}
    missing = [n for n in names if n not in found]
    if missing:
        x, y = truth_training_set(data, settings)

        def keep(score: CandidateScore) -> None:  # written one by one, so an interrupted truth resumes
            if use_cache and score.error is None:
                _write_cache(path, key, {score.arch: {"acc": score.acc, "seconds": score.seconds}})

        fresh = score_candidates(missing, x, y, data, settings.train_settings(data, truth=True), settings.truth_seeds,
                                 settings.seed, parallel, progress, desc="ground truth", on_result=keep)
        found |= {s.arch: s for s in fresh}
    return [found[n] for n in names]


# ---- one search ---------------------------------------------------------------------------------

@dataclass
class Ranking:
    """The scores of one set of candidates on one kind of training data, and the time they took."""

    name: str  # 'proxy', 'control' or 'truth'
    scores: list[CandidateScore]
    wall_seconds: float

    @property
    def compute_seconds(self) -> float:
        """Training seconds summed over candidates (the cost of a sequential search)."""
        return float(sum(s.seconds for s in self.scores))

    @property
    def means(self) -> list[float]:
        return [s.mean for s in self.scores]

    @property
    def cached(self) -> int:
        return sum(s.cached for s in self.scores)


@dataclass
class NASOutcome:
    candidates: list[str]
    skipped: list[Skipped]
    settings: NASSettings
    proxy: Ranking
    control: Ranking | None = None
    truth: Ranking | None = None
    proxy_agreement: Agreement | None = None
    control_agreement: Agreement | None = None
    proxy_source: str = ""

    @property
    def time_ratio(self) -> float:
        """Truth compute seconds / proxy compute seconds (how much cheaper the proxy search was)."""
        if self.truth is None or self.proxy.compute_seconds <= 0:
            return float("nan")
        return self.truth.compute_seconds / self.proxy.compute_seconds

    def table(self) -> pd.DataFrame:
        """One row per candidate, best proxy accuracy first; skipped and failed ones at the end."""
        rows: list[dict[str, Any]] = []
        proxy_ranks = ranks(self.proxy.means)
        control_ranks = ranks(self.control.means) if self.control else None
        truth_ranks = ranks(self.truth.means) if self.truth else None
        for i, arch in enumerate(self.candidates):
            p = self.proxy.scores[i]
            row: dict[str, Any] = {"arch": arch, "status": "ok", "proxy_acc": p.mean, "proxy_std": p.std,
                                   "proxy_rank": proxy_ranks[i]}
            errors = [p.error]
            if self.control is not None and control_ranks is not None:
                c = self.control.scores[i]
                row |= {"control_acc": c.mean, "control_rank": control_ranks[i]}
                errors.append(c.error)
            if self.truth is not None and truth_ranks is not None:
                t = self.truth.scores[i]
                row |= {"true_acc": t.mean, "true_rank": truth_ranks[i]}
                errors.append(t.error)
            row["proxy_seconds"] = p.seconds
            if self.truth is not None:
                row["truth_seconds"] = self.truth.scores[i].seconds
            failed = [e for e in errors if e]
            if failed:
                row |= {"status": "failed", "reason": failed[0]}
            else:
                row["reason"] = ""
            rows.append(row)
        for s in self.skipped:
            rows.append({"arch": s.arch, "status": "skipped", "reason": s.reason})
        frame = pd.DataFrame(rows)
        order = frame["status"].map({"ok": 0, "failed": 1, "skipped": 2})
        sort_key = frame["proxy_rank"].fillna(math.inf) if "proxy_rank" in frame else order
        frame = frame.assign(_o=order, _r=sort_key).sort_values(["_o", "_r"], kind="stable")
        return frame.drop(columns=["_o", "_r"]).reset_index(drop=True)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {
            "candidates": float(len(self.candidates)),
            "skipped": float(len(self.skipped)),
            "proxy.seconds": self.proxy.compute_seconds,
            "proxy.wall_seconds": self.proxy.wall_seconds,
        }
        if self.control is not None:
            out |= {"control.seconds": self.control.compute_seconds, "control.wall_seconds": self.control.wall_seconds}
        if self.truth is not None:
            out |= {"truth.seconds": self.truth.compute_seconds, "truth.wall_seconds": self.truth.wall_seconds,
                    "truth.cached": float(self.truth.cached), "time_ratio": self.time_ratio}
        if self.proxy_agreement is not None:
            out |= self.proxy_agreement.metrics("proxy")
        if self.control_agreement is not None:
            out |= self.control_agreement.metrics("control")
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def summary(self) -> dict[str, Any]:
        """Everything as plain JSON-able values."""
        def ranking(r: Ranking | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {"compute_seconds": r.compute_seconds, "wall_seconds": r.wall_seconds, "cached": r.cached,
                    "scores": [asdict(s) | {"mean": s.mean, "std": s.std} for s in r.scores]}

        return {
            "proxy_source": self.proxy_source,
            "settings": asdict(self.settings),
            "candidates": self.candidates,
            "skipped": [asdict(s) for s in self.skipped],
            "proxy": ranking(self.proxy),
            "control": ranking(self.control),
            "truth": ranking(self.truth),
            "proxy_agreement": self.proxy_agreement.as_dict() if self.proxy_agreement else None,
            "control_agreement": self.control_agreement.as_dict() if self.control_agreement else None,
            "time_ratio": self.time_ratio,
        }


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_nas(
    proxy: SyntheticSet,
    data: RealData,
    candidates: Sequence[str],
    settings: NASSettings | None = None,
    control: bool = True,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    parallel: Parallel | None = None,
    progress: bool = True,
    proxy_source: str = "",
) -> NASOutcome:
    """Rank ``candidates`` on the proxy (and a same-size random real control), compare with the truth.

    Candidates that cannot be built for this data (e.g. too deep for the image size) are skipped
    with their reason. The ground truth runs when ``settings.truth_epochs > 0``.
    """
    from ddsearch.nas.spaces import split_runnable

    from ddsearch.augment import DSA

    settings = settings or NASSettings()
    proxy.check_fits(data, source=proxy_source or "proxy set")
    DSA(settings.strategy(data))  # a bad strategy fails here, not once per candidate
    runnable, skipped = split_runnable(list(candidates), data.channels, data.num_classes, data.image_size)
    if not runnable:
        reasons = "; ".join(f"{s.arch}: {s.reason}" for s in skipped[:3])
        raise DDSearchError(f"no candidate can run on {data.name} at {data.image_size[0]}x{data.image_size[1]} ({reasons})")
    scores, wall = _timed(score_set, runnable, proxy, data, settings, parallel, progress, "proxy")
    if all(s.error for s in scores):
        raise DDSearchError(f"every candidate failed to train on the proxy; the first: {scores[0].arch}: {scores[0].error}")
    outcome = NASOutcome(runnable, skipped, settings, Ranking("proxy", scores, wall), proxy_source=proxy_source)
    if control:
        random_set = control_set(data, proxy, seed=settings.seed)
        scores, wall = _timed(score_set, runnable, random_set, data, replace(settings, use_learned_lr=False),
                              parallel, progress, "control")
        outcome.control = Ranking("control", scores, wall)
    if settings.truth_epochs > 0:
        scores, wall = _timed(ground_truth, runnable, data, settings, cache_dir, use_cache, parallel, progress)
        outcome.truth = Ranking("truth", scores, wall)
        outcome.proxy_agreement = agreement(runnable, outcome.proxy.means, outcome.truth.means, settings.top_k)
        if outcome.control is not None:
            outcome.control_agreement = agreement(runnable, outcome.control.means, outcome.truth.means, settings.top_k)
    return outcome
