"""One ranking protocol: train each candidate from scratch ``seeds`` times and score it by its
mean accuracy on the real validation split.

Training follows the evaluator's recipe (:func:`ddsearch.evaluate.train_network`: SGD, step
decay, DSA). Network ``r`` of a candidate starts from the same initial weights in every ranking
(seed ``seed * 1000 + r``), so rankings differ by their training data only. Candidates train
one after another, or as Ray tasks (:func:`ddsearch.search.parallel.ray_map`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ddsearch.data import RealData
from ddsearch.evaluate import TrainSettings, accuracy, build_network, train_network
from ddsearch.nas.settings import Parallel
from ddsearch.precision import resolve_precision


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
                    seeds: int, seed: int, progress: bool = False) -> CandidateScore:
    """Train ``arch`` on (x, y) ``seeds`` times; a failure is recorded on the score, not raised.

    ``progress`` shows an epoch bar per seed: a ground-truth candidate can train for half an hour.
    """
    score = CandidateScore(arch)
    start = time.perf_counter()
    precision = resolve_precision(settings.precision, x.device)
    try:
        for r in range(seeds):
            run_seed = seed * 1000 + r
            net = build_network(arch, data, run_seed, x.device)
            train_network(net, x, y, settings, run_seed, progress, desc=f"{arch} seed {r + 1}/{seeds}")
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
            scores.append(train_candidate(arch, x, y, data, settings, seeds, seed, progress))
            if on_result is not None:
                on_result(scores[-1])
        return scores
    from ddsearch.search.parallel import ray_map

    shared = {"x": x.cpu(), "y": y.cpu(), "data": data.to("cpu"), "settings": settings, "seeds": seeds,
              "seed": seed, "threads": max(1, int(parallel.cpus_per_task))}
    return ray_map(_candidate_task, list(names), shared, num_cpus=parallel.cpus_per_task,
                   num_gpus=parallel.gpus_per_task, address=parallel.address, max_cpus=parallel.max_cpus,
                   progress=progress, desc=desc, on_result=None if on_result is None else (lambda _, r: on_result(r)))
