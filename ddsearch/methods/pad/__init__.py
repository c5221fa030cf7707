"""PAD (Li et al., 2024): difficulty scores, scheduled expert trajectories, trajectory matching.

- :mod:`.settings`: :class:`PADSettings`, the study's ``method`` section;
- :mod:`.scores`: EL2N / GraNd per training sample, cached (``ddsearch scores``);
- :mod:`.scheduler`: which samples of each class an expert sees at each epoch;
- :mod:`.experts`: expert trajectories, cached and memory-mapped (``ddsearch experts``);
- :mod:`.matching`: the :class:`PAD` distiller.

Everything but the settings loads on first use (torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from ddsearch.methods.pad.settings import PADSettings  # noqa: F401 - the one eager export: no torch

_EXPORTS = {
    "PAD": "matching", "matching_loss": "matching", "loss_ranked_matching_loss": "matching",
    "ExpertBuffer": "experts", "get_experts": "experts", "train_expert": "experts",
    "ParamLayout": "flat", "kept_from": "flat", "selection_mask": "flat",
    "active_indices": "scheduler", "active_range": "scheduler", "epoch_indices": "scheduler",
    "sort_by_score": "scheduler",
    "compute_scores": "scores", "get_scores": "scores",
}
__all__ = sorted([*_EXPORTS, "PADSettings"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
