"""One distillation run, whatever the method: steps, checkpoint evaluations, final table.

Used by ``ddsearch distill`` and by every Ray Tune trial. It knows nothing of MLflow or Ray:
callers pass an :class:`Observer` that logs, reports or checkpoints.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from ddsearch.config import Study
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.evaluate import EvalResult, TrainSettings, evaluate_synset
from ddsearch.events import EvalPoint, NullObserver, Observer, RunOutcome
from ddsearch.methods import create_distiller, validate_method
from ddsearch.methods.base import Distiller
from ddsearch.precision import resolve_precision
from ddsearch.synset import SyntheticSet


class DivergedError(DDSearchError):
    """The loss became NaN or inf; ``last_good`` is the synset from the last finite check."""

    def __init__(self, message: str, last_good: SyntheticSet | None, iteration: int) -> None:
        super().__init__(message)
        self.last_good = last_good
        self.iteration = iteration


def eval_settings(study: Study, final: bool) -> TrainSettings:
    """Evaluator protocol from the study; the DSA strategy matches the distiller's."""
    from ddsearch.augment import resolve_strategy

    ev = study.evaluation
    return TrainSettings(
        epochs=ev.final_epochs if final else ev.epochs,
        lr=ev.lr,
        batch_size=ev.batch_size,
        dsa_strategy=resolve_strategy(study.method.dsa_strategy, study.dataset.name),
        precision=study.precision,
    )


def evaluate_point(study: Study, data: RealData, synset: SyntheticSet, iteration: int) -> EvalResult:
    ev = study.evaluation
    return evaluate_synset(
        synset, data, ev.arch, eval_settings(study, final=False), repeats=ev.repeats, seed=study.seed + iteration
    )


def cross_architecture_table(study: Study, data: RealData, synset: SyntheticSet, progress: bool = False) -> list[EvalResult]:
    """Train every evaluator architecture on the final set (final_epochs, final_repeats)."""
    settings = eval_settings(study, final=True)
    rows = []
    for arch in tqdm(study.evaluators, desc="evaluators", disable=not progress, leave=False):
        rows.append(
            evaluate_synset(synset, data, arch, settings, repeats=study.evaluation.final_repeats, seed=study.seed, progress=progress)
        )
    return rows


def run_distillation(
    study: Study,
    data: RealData,
    observer: Observer | None = None,
    resume_state: dict[str, Any] | None = None,
    progress: bool = True,
    final_table: bool = True,
) -> RunOutcome:
    """Distill with the study's method, evaluating every ``eval_every`` iterations and at the end.

    Host syncs happen only at logging points (every ``log_every`` steps) and evaluations.
    """
    observer = observer or NullObserver()
    distiller: Distiller = create_distiller(
        study.method, data, seed=study.seed, progress=progress, precision=study.precision
    )
    if resume_state is not None:
        distiller.load_state_dict(resume_state)
    elif hasattr(observer, "on_start"):
        observer.on_start(distiller.synset())
    ev = study.evaluation
    total = study.method.iterations
    outcome = RunOutcome(synset=distiller.synset())
    clock = {"distill": float(resume_state.get("distill_seconds", 0.0)) if resume_state else 0.0, "eval": 0.0}
    pending: list[torch.Tensor] = []
    last_good = distiller.synset()

    bar = tqdm(total=total, initial=distiller.iteration, desc=f"{study.method.name}", disable=not progress, unit="it")
    while distiller.iteration < total:
        start = time.perf_counter()
        pending.append(distiller.step())
        it = distiller.iteration
        at_eval = it % ev.eval_every == 0 or it == total
        if it % ev.log_every == 0 or at_eval:
            current = distiller.synset()
            # The one host sync per log window: the losses and the largest pixel, together.
            peak = current.images.detach().abs().amax().float().reshape(1)
            values = torch.cat([torch.stack(pending).float().reshape(-1), peak.to(pending[0].device)]).cpu().tolist()
            losses, largest = values[:-1], values[-1]
            pending.clear()
            problem = _divergence(losses, largest, current.lr, ev.max_pixel)
            if problem:
                bar.close()
                raise DivergedError(
                    f"diverged at iteration {it}: {problem}; lower method.lr_img (now {study.method.lr_img}). "
                    f"The last good synthetic set was kept",
                    last_good,
                    it,
                )
            last_good = current
            observer.on_losses(it, losses)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
        clock["distill"] += time.perf_counter() - start
        bar.update(1)
        if at_eval:
            eval_start = time.perf_counter()
            synset = distiller.synset()
            result = evaluate_point(study, data, synset, it)
            clock["eval"] += time.perf_counter() - eval_start
            point = EvalPoint(it, result.val_mean, result.test_mean, synset, clock["distill"], clock["eval"])
            outcome.evals.append(point)
            bar.write(f"iteration {it}: val_acc {point.val_acc:.4f}  test_acc {point.test_acc:.4f}")
            state = distiller.state_dict() | {"distill_seconds": clock["distill"]}
            observer.on_eval(point, state)
    bar.close()

    outcome.synset = distiller.synset()
    outcome.distill_seconds = clock["distill"]
    if final_table:
        start = time.perf_counter()
        outcome.table = cross_architecture_table(study, data, outcome.synset, progress=progress)
        clock["eval"] += time.perf_counter() - start
    outcome.eval_seconds = clock["eval"]
    observer.on_final(outcome)
    return outcome


def _divergence(losses: list[float], largest_pixel: float, lr: float | None, max_pixel: float) -> str:
    """Why a run has diverged ('' if it has not): a non-finite loss, or images or lr out of bounds."""
    if not all(math.isfinite(v) for v in losses):
        return f"the loss became {next(v for v in losses if not math.isfinite(v))}"
    if not math.isfinite(largest_pixel):
        return "the synthetic images hold NaN or infinite pixels"
    if largest_pixel > max_pixel:
        return f"synthetic pixels reached {largest_pixel:.3g} (limit evaluation.max_pixel = {max_pixel:g})"
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        return f"the learned lr became {lr}"
    return ""


def validate_study(study: Study, data: RealData) -> None:
    """Fail before anything is logged: the method must build, every evaluator must fit the data."""
    from ddsearch.models import get_network

    validate_method(study.method, data)
    for arch in {study.evaluation.arch, *study.evaluators}:
        get_network(arch, data.channels, data.num_classes, data.image_size)


def with_resolved_precision(study: Study, device: torch.device) -> Study:
    """The study with 'auto' precision resolved for ``device``, so logs and synsets name what ran."""
    return study.model_copy(update={"precision": resolve_precision(study.precision, device)})
