"""The NAS protocol's settings: the one place their defaults live (the CLI reads them from here).

Import-light on purpose (no torch), so that ``ddsearch --help`` stays instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ddsearch.errors import DDSearchError

if TYPE_CHECKING:
    from ddsearch.data import RealData
    from ddsearch.evaluate import TrainSettings


@dataclass(frozen=True)
class NASSettings:
    """The search protocol. These are the defaults of ``ddsearch nas`` too."""

    epochs: int = 300  # proxy (and control) training epochs
    seeds: int = 2  # trainings per candidate on the proxy and the control
    lr: float = 0.01  # used unless the proxy carries a learned lr (and always for control and truth)
    batch_size: int = 256
    dsa_strategy: str = "auto"  # 'auto': by data set (no flip for digits); 'none' disables DSA
    use_learned_lr: bool = True
    truth_epochs: int = 0  # 0: no ground truth
    truth_seeds: int = 1
    truth_train_size: int = 0  # real training images for the truth; 0: the whole training split
    truth_batch_size: int = 256
    top_k: int = 3
    seed: int = 0
    precision: str = "auto"  # network compute precision of every training (ddsearch.precision)

    def __post_init__(self) -> None:
        for name in ("epochs", "seeds", "batch_size", "truth_seeds", "truth_batch_size", "top_k"):
            if getattr(self, name) < 1:
                raise DDSearchError(f"nas: {name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("truth_epochs", "truth_train_size"):
            if getattr(self, name) < 0:
                raise DDSearchError(f"nas: {name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DDSearchError(f"nas: lr must be a finite number > 0, got {self.lr}")

    def strategy(self, data: "RealData") -> str:
        from ddsearch.augment import resolve_strategy

        return resolve_strategy(self.dsa_strategy, data.name)

    def train_settings(self, data: "RealData", lr: float | None = None, truth: bool = False) -> "TrainSettings":
        from ddsearch.evaluate import TrainSettings

        return TrainSettings(
            epochs=self.truth_epochs if truth else self.epochs,
            lr=lr if lr is not None else self.lr,
            batch_size=self.truth_batch_size if truth else self.batch_size,
            dsa_strategy=self.strategy(data),
            precision=self.precision,
        )


@dataclass(frozen=True)
class Parallel:
    """Run candidates as Ray tasks, each with this share of a node (fractions share a GPU)."""

    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    address: str | None = None
    max_cpus: int | None = None
