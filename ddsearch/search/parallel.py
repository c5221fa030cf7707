"""Fan independent jobs out as Ray tasks (used by ``ddsearch nas`` to train candidates at once).

Kept here because only ``ddsearch.search`` imports Ray. Each job asks for a (possibly
fractional) share of CPUs and GPUs, so several small trainings can share one GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from ddsearch.errors import DDSearchError


def ray_map(
    fn: Callable[..., Any],
    items: Sequence[Any],
    shared: Mapping[str, Any] | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    address: str | None = None,
    max_cpus: int | None = None,
    progress: bool = True,
    desc: str = "tasks",
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[fn(item, **shared) for item in items]``, each call a Ray task; results in item order.

    ``shared`` values (e.g. the data set) go to the object store once and are resolved in every
    task. Ray is started for the call (``address`` joins a cluster; ``max_cpus`` caps a local
    one) and shut down afterwards, unless the caller had already started it. ``on_result(i, result)``
    is called in the driver as each task finishes.
    """
    try:
        import ray
    except ImportError:
        raise DDSearchError("parallel candidates need Ray (pip install 'ray[tune]'); or run without --parallel") from None
    if not items:
        return []
    started = False
    if not ray.is_initialized():
        from contextlib import nullcontext

        from ddsearch.search.cluster import loopback_only, resolve_address

        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        address = resolve_address(address)
        if address:
            kwargs["address"] = address
        else:  # a Ray of our own, on loopback (never a cluster someone else started on this machine)
            kwargs["address"] = "local"
            if max_cpus:
                kwargs["num_cpus"] = max_cpus
        with loopback_only() if not address else nullcontext():
            ray.init(**kwargs)
        started = True
    try:
        refs_shared = {key: ray.put(value) for key, value in (shared or {}).items()}
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(fn)
        refs = [task.remote(item, **refs_shared) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        with tqdm(total=len(refs), desc=desc, disable=not progress, unit="task") as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = index[ref]
                    results[i] = ray.get(ref)
                    if on_result is not None:
                        on_result(i, results[i])
                bar.update(len(done))
        return results
    finally:
        if started:
            ray.shutdown()
