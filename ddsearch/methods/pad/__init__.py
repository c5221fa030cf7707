"""PAD (Li et al., 2024): difficulty scores, scheduled expert trajectories, trajectory matching.

- :mod:`.scores`: EL2N / GraNd per training sample, cached (``ddsearch scores``);
- :mod:`.scheduler`: which samples of each class an expert sees at each epoch;
- :mod:`.experts`: expert trajectories, cached and memory-mapped (``ddsearch experts``);
- :mod:`.matching`: the :class:`PAD` distiller.
"""

from ddsearch.methods.pad.experts import ExpertBuffer, get_experts, train_expert
from ddsearch.methods.pad.flat import ParamLayout, kept_from, selection_mask
from ddsearch.methods.pad.matching import PAD, matching_loss
from ddsearch.methods.pad.scheduler import active_indices, active_range, epoch_indices, sort_by_score
from ddsearch.methods.pad.scores import compute_scores, get_scores

__all__ = [
    "PAD",
    "ExpertBuffer",
    "ParamLayout",
    "active_indices",
    "active_range",
    "compute_scores",
    "epoch_indices",
    "get_experts",
    "get_scores",
    "kept_from",
    "matching_loss",
    "selection_mask",
    "sort_by_score",
    "train_expert",
]
