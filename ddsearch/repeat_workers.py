"""Train an evaluator's repeats side by side in worker processes (opt-in, CPU only).

Measured on this project's 2-core CPU (``benchmarks/results/evaluate_repeats*_cpu.md``), two
one-thread processes train repeats no faster than one two-thread process on a quiet machine
(0.94-0.96x), but twice as fast when other work shares the cores, where a two-thread process
stalls at every OpenMP barrier. So the default stays in-process, and ``TrainSettings.workers``
(``reproduce.py --workers``) opts in on busy machines. Workers are spawned, not forked, so no
OpenMP state is inherited; they train and hand back weights, and the parent scores every network.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing as torch_mp
from tqdm.auto import tqdm

from ddsearch.errors import DDSearchError

@dataclass(frozen=True)
class NetworkShape:
    """What ``build_network`` needs from the data, without sending the data to the workers."""

    name: str
    channels: int
    num_classes: int
    image_size: Any


def worker_count(repeats: int, device: torch.device, setting: int | None) -> int:
    """How many processes to train ``repeats`` with: 1 (the default) means in-process; CPUs only."""
    if device.type != "cpu" or not setting:
        return 1
    return max(1, min(setting, repeats))


_epochs_done: Any = None  # the parent's shared epoch counter, set in each worker at start


def _start_worker(epochs_done: Any, threads: int) -> None:
    global _epochs_done
    _epochs_done = epochs_done
    torch.set_num_threads(threads)


def _count_epoch() -> None:
    with _epochs_done.get_lock():
        _epochs_done.value += 1


def _train_one(arch: str, shape: NetworkShape, x: torch.Tensor, y: torch.Tensor, settings: Any,
               run_seed: int) -> dict[str, torch.Tensor]:
    """Worker body: build and train one repeat exactly as the in-process path would."""
    from ddsearch.evaluate import build_network, train_network

    net = build_network(arch, shape, run_seed, "cpu")
    train_network(net, x, y, settings, run_seed, on_epoch=_count_epoch)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def train_in_workers(nets: list[torch.nn.Module], seeds: list[int], arch: str, shape: NetworkShape,
                     x: torch.Tensor, y: torch.Tensor, settings: Any, workers: int, progress: bool,
                     desc: str) -> None:
    """Train each of ``nets`` (already built with ``seeds``) in ``workers`` processes; weights land in place."""
    context = torch_mp.get_context("spawn")
    epochs_done = context.Value("q", 0)
    threads = max(1, torch.get_num_threads() // workers)
    total = settings.epochs * len(nets)
    x, y = x.detach().cpu(), y.detach().cpu()  # torch's pickler moves them to shared memory
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                             initargs=(epochs_done, threads)) as pool, \
            tqdm(total=total, desc=f"{desc} ({workers} processes)", disable=not progress, leave=False, unit="ep") as bar:
        futures = {pool.submit(_train_one, arch, shape, x, y, settings, run_seed): net
                   for net, run_seed in zip(nets, seeds)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    futures[future].load_state_dict(future.result())
                except BrokenProcessPool as error:
                    raise DDSearchError(
                        "the evaluator's worker processes died while starting or training; when ddsearch is "
                        "called from a script, put the call under `if __name__ == \"__main__\":` (workers are "
                        "spawned and import the script), or pass TrainSettings(workers=1)") from error
            bar.update(epochs_done.value - bar.n)


