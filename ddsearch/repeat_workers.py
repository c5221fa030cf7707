"""Train an evaluator's repeats side by side in worker processes, one per CPU core.

On a small CPU the evaluator's step is a string of memory-bound passes (norm, activation,
pooling) over modest tensors, which two threads split badly: two single-threaded processes
each training its own repeat got through more repeats per minute than one two-threaded process
(``benchmarks/results/evaluate_workers_cpu.md``). GPUs and Ray trials (which own one core each)
keep the in-process path. Workers are spawned, not forked, so no OpenMP state is inherited;
they train and hand back weights, and the parent scores every network itself.
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

# Below this many image-epochs per repeat the spawn cost (a few seconds) outweighs the gain.
MIN_IMAGE_EPOCHS = 20_000


@dataclass(frozen=True)
class NetworkShape:
    """What ``build_network`` needs from the data, without sending the data to the workers."""

    name: str
    channels: int
    num_classes: int
    image_size: Any


def worker_count(repeats: int, image_epochs: int, device: torch.device, setting: int | None) -> int:
    """How many processes to train ``repeats`` with: 1 means in-process.

    ``setting`` None picks automatically: CPU only, one worker per intra-op thread this process
    may use (a Ray trial's budget shows up there), and only for work big enough to pay for
    starting processes.
    """
    if setting is not None:
        return max(1, min(setting, repeats))
    if device.type != "cpu" or repeats < 2 or image_epochs < MIN_IMAGE_EPOCHS:
        return 1
    return max(1, min(repeats, torch.get_num_threads()))


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


