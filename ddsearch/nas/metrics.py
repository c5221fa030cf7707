"""How well a proxy ranking agrees with the true one: Spearman rho, Kendall tau, top-k, regret.

All functions take scores (accuracies, higher is better) in one shared candidate order. Rules
for ties, so that the numbers are reproducible:

- ranks are average ranks (tied candidates share the mean of their places; 1 = best);
- Spearman is the Pearson correlation of those ranks, Kendall is tau-b (which corrects for ties);
  both are NaN when fewer than 2 candidates remain or one side is constant;
- the proxy's top-k are the k best proxy scores, ties broken by candidate order (first listed
  wins); a proxy pick counts as a true top-k member when its true score reaches the k-th best
  true score, so candidates tied on the truth side are all "in the true top k";
- the proxy's top pick is its best score (ties: first listed); regret = best true accuracy minus
  the pick's true accuracy (0 when the proxy picked a truly best candidate).

With a dozen candidates one rho carries a wide error, so :func:`spearman_gap` says whether a proxy
ranks better than a control with a paired bootstrap over the candidates.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import stats


def _array(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=float)


def ranks(scores: Sequence[float]) -> np.ndarray:
    """Average ranks, 1 = highest score; NaN scores get NaN ranks."""
    a = _array(scores)
    out = np.full(a.shape, np.nan)
    ok = np.isfinite(a)
    out[ok] = stats.rankdata(-a[ok], method="average")
    return out


def _both_finite(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = _array(a), _array(b)
    if x.shape != y.shape:
        raise ValueError(f"score lists differ in length: {x.shape[0]} vs {y.shape[0]}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep], keep


def _correlation(fn, a: Sequence[float], b: Sequence[float]) -> float:
    x, y, _ = _both_finite(a, b)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(x, y)[0])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho over candidates scored on both sides."""
    return _correlation(stats.spearmanr, a, b)


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b over candidates scored on both sides."""
    return _correlation(stats.kendalltau, a, b)


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k best finite scores, best first; ties keep the candidate order."""
    a = _array(scores)
    order = [i for i in np.argsort(-a, kind="stable") if np.isfinite(a[i])]
    return [int(i) for i in order[: max(k, 0)]]


def top_k_overlap(proxy: Sequence[float], truth: Sequence[float], k: int) -> float:
    """Fraction of the proxy's top k that are in the true top k (tie-aware on the truth side)."""
    x, y, _ = _both_finite(proxy, truth)
    k = min(k, x.size)
    if k <= 0:
        return float("nan")
    kth_true = np.sort(y)[::-1][k - 1]
    picked = top_k(x, k)
    return float(sum(y[i] >= kth_true for i in picked) / k)


@dataclass(frozen=True)
class Agreement:
    """Agreement of one proxy ranking with the ground truth (accuracies in [0, 1])."""

    n: int
    spearman: float
    kendall: float
    k: int
    top_k_overlap: float
    top_pick: str
    top_pick_true_acc: float
    true_best: str
    true_best_acc: float
    regret: float

    def as_dict(self) -> dict:
        return asdict(self)

    def metrics(self, prefix: str) -> dict[str, float]:
        """The numeric fields as MLflow metrics named ``{prefix}.{field}`` (NaN left out)."""
        keys = ("n", "spearman", "kendall", "top_k_overlap", "top_pick_true_acc", "true_best_acc", "regret")
        return {f"{prefix}.{key}": float(getattr(self, key)) for key in keys if math.isfinite(float(getattr(self, key)))}


def agreement(names: Sequence[str], proxy: Sequence[float], truth: Sequence[float], k: int = 3) -> Agreement:
    """Compare a proxy ranking with the truth over the candidates scored on both sides."""
    if not (len(names) == len(proxy) == len(truth)):
        raise ValueError("names, proxy and truth must have the same length")
    x, y, keep = _both_finite(proxy, truth)
    kept = [n for n, ok in zip(names, keep) if ok]
    if not kept:
        nan = float("nan")
        return Agreement(0, nan, nan, k, nan, "", nan, "", nan, nan)
    pick = top_k(x, 1)[0]
    best = top_k(y, 1)[0]
    return Agreement(
        n=len(kept),
        spearman=spearman(x, y),
        kendall=kendall(x, y),
        k=min(k, len(kept)),
        top_k_overlap=top_k_overlap(x, y, k),
        top_pick=kept[pick],
        top_pick_true_acc=float(y[pick]),
        true_best=kept[best],
        true_best_acc=float(y[best]),
        regret=float(y[best] - y[pick]),
    )


MIN_GAP_CANDIDATES = 4  # below this a resampled rho is mostly ties and +-1
UNRANKED = "the proxy or the control scores every candidate alike, so it has no ranking to compare"


@dataclass(frozen=True)
class SpearmanGap:
    """Spearman(proxy, truth) minus Spearman(control, truth), with a paired-bootstrap interval."""

    gap: float
    low: float
    high: float
    level: float
    resamples: int  # the resamples that had a rho on both sides

    @property
    def decided(self) -> bool:
        """Whether the interval excludes 0 (one proxy ranks better, at this level)."""
        return self.low > 0 or self.high < 0

    @property
    def ranked(self) -> bool:
        """Whether both sides have a rho: a side that scores every candidate alike ranks nothing."""
        return math.isfinite(self.gap)

    def verdict(self, undecided: str) -> str:
        """Which ranking is better at this level, or ``undecided`` when the interval straddles 0."""
        return "the proxy ranks better" if self.low > 0 else "the control ranks better" if self.high < 0 else undecided

    def as_dict(self) -> dict:
        return asdict(self) | {"decided": self.decided}

    @classmethod
    def from_dict(cls, record: dict) -> "SpearmanGap":
        """Back from ``as_dict`` (a benchmark's JSON), ignoring the derived keys."""
        return cls(**{f.name: record[f.name] for f in fields(cls)})


def spearman_gap(proxy: Sequence[float], control: Sequence[float], truth: Sequence[float],
                 resamples: int = 4000, level: float = 0.95, seed: int = 0) -> SpearmanGap:
    """How much better ``proxy`` ranks than ``control``, resampling candidates with replacement.

    Both rankings see the same resampled candidates (paired), so what the truth's own spread does
    to rho cancels out; the interval is the percentile interval of the resampled gaps. A resample
    that leaves one side constant has no rho and is dropped (scipy's ``bootstrap`` would turn the
    whole interval into NaN). Candidates missing from any list are left out; with fewer than
    ``MIN_GAP_CANDIDATES`` the interval is NaN, since it would say nothing.
    """
    x, c, t = _array(proxy), _array(control), _array(truth)
    if not (x.shape == c.shape == t.shape):
        raise ValueError("proxy, control and truth must have the same length")
    keep = np.isfinite(x) & np.isfinite(c) & np.isfinite(t)
    x, c, t = x[keep], c[keep], t[keep]
    gap = spearman(x, t) - spearman(c, t)
    if x.size < MIN_GAP_CANDIDATES or not math.isfinite(gap):
        return SpearmanGap(gap, float("nan"), float("nan"), level, 0)
    picks = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    gaps = np.array([spearman(x[i], t[i]) - spearman(c[i], t[i]) for i in picks])
    gaps = gaps[np.isfinite(gaps)]
    low, high = np.quantile(gaps, [(1 - level) / 2, (1 + level) / 2])
    return SpearmanGap(float(gap), float(low), float(high), level, int(gaps.size))
