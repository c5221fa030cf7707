"""Rank candidates on a proxy set, on a random real control, and on real data (the ground truth).

Every ranking uses one protocol (:mod:`ddsearch.nas.scoring`); the ground truth and its cache
are :mod:`ddsearch.nas.truth`'s. :func:`run_nas` runs one search and compares the rankings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.nas.metrics import Agreement, SpearmanGap, agreement, ranks, spearman_gap
from ddsearch.nas.scoring import CandidateScore, score_candidates
from ddsearch.nas.settings import NASSettings, Parallel
from ddsearch.nas.spaces import Skipped
from ddsearch.nas.truth import ground_truth
from ddsearch.synset import SyntheticSet

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
    proxy_vs_control: SpearmanGap | None = None
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
        if self.proxy_vs_control is not None:
            gap = self.proxy_vs_control
            out |= {"proxy_vs_control.spearman_gap": gap.gap, "proxy_vs_control.low": gap.low,
                    "proxy_vs_control.high": gap.high}
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
            "proxy_vs_control": self.proxy_vs_control.as_dict() if self.proxy_vs_control else None,
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
            outcome.proxy_vs_control = spearman_gap(outcome.proxy.means, outcome.control.means, outcome.truth.means,
                                                    seed=settings.seed)
    return outcome
