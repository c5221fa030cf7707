"""What a distillation run emits, and who listens.

The run engine (:mod:`ddsearch.runner`) produces these events and its callers (the MLflow
:class:`~ddsearch.tracking.run_logger.RunLogger`, a Tune trial) consume them. They live here,
apart from both, so that the tracking side never imports the engine (and with it torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # types only: importing them would load torch
    from ddsearch.evaluate import EvalResult
    from ddsearch.synset import SyntheticSet


@dataclass
class EvalPoint:
    iteration: int
    val_acc: float
    test_acc: float
    synset: SyntheticSet
    distill_seconds: float
    eval_seconds: float


@dataclass
class RunOutcome:
    synset: SyntheticSet
    evals: list[EvalPoint] = field(default_factory=list)
    table: list[EvalResult] = field(default_factory=list)
    distill_seconds: float = 0.0
    eval_seconds: float = 0.0


class Observer(Protocol):
    """What a caller hears during a run; every method may be a no-op.

    ``on_start`` (optional) gets the starting set of a fresh run (not of a resumed one), so a
    logger can show where distillation began.
    """

    def on_losses(self, iteration: int, losses: list[float]) -> None: ...

    def on_eval(self, point: EvalPoint, state: dict[str, Any]) -> None: ...

    def on_final(self, outcome: RunOutcome) -> None: ...


class NullObserver:
    def on_losses(self, iteration: int, losses: list[float]) -> None:
        pass

    def on_eval(self, point: EvalPoint, state: dict[str, Any]) -> None:
        pass

    def on_final(self, outcome: RunOutcome) -> None:
        pass
