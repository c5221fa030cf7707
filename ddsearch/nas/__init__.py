"""NAS on distilled proxy data: rank candidate architectures cheaply, and check the ranking.

- :mod:`ddsearch.nas.settings` the protocol (``NASSettings``) and Ray fan-out shares (``Parallel``)
- :mod:`ddsearch.nas.spaces`   candidate spaces: ``seed22``, the 720-architecture ``grid``, lists
- :mod:`ddsearch.nas.metrics`  Spearman, Kendall, top-k overlap, regret (with tie rules), proxy-vs-control gap
- :mod:`ddsearch.nas.scoring`  the one ranking protocol: train each candidate, score it on real val
- :mod:`ddsearch.nas.truth`    the ground truth: candidates trained on real data, cached on disk
- :mod:`ddsearch.nas.ranking`  rankings on the proxy, the random control and real data; one search
- :mod:`ddsearch.nas.report`   the scatter plot, the summary lines and the MLflow run

``ddsearch nas`` itself is :mod:`ddsearch.commands.nas`.

Library use (no MLflow, no Ray)::

    outcome = run_nas(proxy, data, resolve_space("seed22"), NASSettings(epochs=300, truth_epochs=2))
    outcome.table(); outcome.proxy_agreement.spearman

The names below are imported lazily, so that ``ddsearch --help`` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NASSettings": "settings", "Parallel": "settings",
    "GRID_AXES": "spaces", "SEED22": "spaces", "Skipped": "spaces", "grid_space": "spaces",
    "resolve_space": "spaces", "split_runnable": "spaces",
    "Agreement": "metrics", "agreement": "metrics", "kendall": "metrics", "ranks": "metrics",
    "spearman": "metrics", "spearman_gap": "metrics", "SpearmanGap": "metrics", "top_k": "metrics",
    "top_k_overlap": "metrics",
    "CandidateScore": "scoring", "NASOutcome": "ranking", "Ranking": "ranking", "control_set": "ranking",
    "ground_truth": "truth", "run_nas": "ranking", "score_candidates": "scoring",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ddsearch.nas' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ddsearch.nas.{_EXPORTS[name]}"), name)
