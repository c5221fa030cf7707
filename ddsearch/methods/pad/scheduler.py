"""PAD's data scheduler: which real samples of each class an expert trains on at each epoch.

For a class of ``n`` samples sorted easiest -> hardest and a training epoch ``e`` (0-based):

- hard end: the easiest ``floor(p(e) * n)`` samples are in, with
  ``p(e) = init_ratio + (1 - init_ratio) * e / add_end_epoch`` for ``e < add_end_epoch`` and 1 after
  (so harder samples are added linearly; all are in from ``add_end_epoch`` on);
- easy end: for ``e > rm_epoch_first`` the easiest ``floor(rm_easy_ratio_first * n)`` are dropped,
  for ``e > rm_epoch_second`` the easiest ``floor(rm_easy_ratio_second * n)``.

This is the reference's schedule with the class size as a parameter (the reference hard-codes
5000 per class). Two small generalisations: the two ends compose if the stages overlap (the
reference ignores removal until adding has ended), and every non-empty class keeps at least its
hardest admitted sample, so tiny classes never vanish from an epoch.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

_EPS = 1e-9  # floor(0.29 * 100) must be 29, not 28


class ScheduleSettings(Protocol):
    init_ratio: float
    add_end_epoch: int
    rm_epoch_first: int
    rm_easy_ratio_first: float
    rm_epoch_second: int
    rm_easy_ratio_second: float


def _floor(x: float) -> int:
    return int(math.floor(x + _EPS))


def active_range(n: int, epoch: int, s: ScheduleSettings) -> tuple[int, int]:
    """``(start, end)``: at ``epoch`` the class trains on its sorted samples ``[start, end)``."""
    if n <= 0:
        return 0, 0
    if epoch >= s.add_end_epoch:
        end = n
    else:
        end = _floor((s.init_ratio + (1.0 - s.init_ratio) * epoch / s.add_end_epoch) * n)
    end = min(n, max(1, end))
    if epoch > s.rm_epoch_second:
        start = _floor(s.rm_easy_ratio_second * n)
    elif epoch > s.rm_epoch_first:
        start = _floor(s.rm_easy_ratio_first * n)
    else:
        start = 0
    return min(start, end - 1), end


def active_indices(sorted_class_indices: torch.Tensor, epoch: int, settings: ScheduleSettings) -> torch.Tensor:
    """The class's active sample indices at ``epoch``; input sorted easiest -> hardest."""
    start, end = active_range(len(sorted_class_indices), epoch, settings)
    return sorted_class_indices[start:end]


def epoch_indices(sorted_per_class: list[torch.Tensor], epoch: int, settings: ScheduleSettings) -> torch.Tensor:
    """All classes' active indices at ``epoch``, concatenated (class by class)."""
    return torch.cat([active_indices(idx, epoch, settings) for idx in sorted_per_class])


def sort_by_score(scores: torch.Tensor, class_indices: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each class's indices ordered by ascending score (easiest first); ties keep index order."""
    scores = scores.detach().cpu()
    out = []
    for idx in class_indices:
        idx = idx.detach().cpu().long()
        order = torch.sort(scores[idx], stable=True).indices
        out.append(idx[order])
    return out
