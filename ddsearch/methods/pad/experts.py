"""Expert trajectories: networks trained on the difficulty-scheduled real set, one snapshot per epoch.

Expert ``k`` trains ``expert_train_epochs`` epochs with SGD (``lr_teacher``, ``expert_momentum``,
``expert_weight_decay``; sharpness-aware, as FTD's flat experts, when ``expert_sam_rho > 0``),
batch ``expert_batch`` and per-image DSA, on the subset PAD's scheduler picks at each epoch. Its
flat parameters are kept at epoch 0 and after every epoch, and its logits on the real training
images (final snapshot, eval mode) are kept for soft-label initialisation.

Each expert is one verified safetensors file in a directory named by a hash of everything that
shapes it (data set, architecture, expert, scheduler and score settings, seed). Expert ``k`` has
its own seed derived from the run seed, so a study with more experts reuses the first ones. A hit
is memory-mapped and never retrained; a missing or corrupt file is (re)built, never used.
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ddsearch.augment import DSA
from ddsearch.methods.pad.settings import PADSettings
from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.methods.pad import _cache
from ddsearch.evaluate import predict, train_epoch
from ddsearch.precision import resolve_precision
from ddsearch.models import seeded_network
from ddsearch.methods.pad.flat import ParamLayout
from ddsearch.methods.pad.scheduler import epoch_indices, sort_by_score
from ddsearch.methods.pad.scores import dsa_strategy, get_scores, score_description
from ddsearch.methods.pad.sharpness import SharpnessAware

_SCHEDULE_FIELDS = ("init_ratio", "add_end_epoch", "rm_epoch_first", "rm_easy_ratio_first",
                    "rm_epoch_second", "rm_easy_ratio_second")
_EXPERT_FIELDS = ("arch", "lr_teacher", "expert_train_epochs", "expert_batch", "expert_momentum",
                  "expert_weight_decay")
# Every settings field that shapes the cached scores or experts (num_experts: how many get built), so
# `ddsearch experts` can tell which searched keys a prebuilt cache cannot serve; a test holds it to the
# keys of expert_description and score_description.
CACHE_FIELDS = frozenset({*_EXPERT_FIELDS, "expert_sam_rho", *_SCHEDULE_FIELDS, "score", "score_models",
                          "score_epochs", "dsa_strategy", "num_experts"})


@dataclass
class ExpertBuffer:
    """The experts of one cache key: trajectories ``[epochs + 1, P]`` and train logits ``[N, classes]``."""

    trajectories: list[torch.Tensor]
    logits: list[torch.Tensor]
    val_acc: list[float]
    layout: ParamLayout
    paths: list[Path]
    key: str
    built: int = 0  # how many experts this call trained (0: all were cache hits)

    @property
    def epochs(self) -> int:
        return int(self.trajectories[0].shape[0]) - 1

    def __len__(self) -> int:
        return len(self.trajectories)


def expert_description(data: RealData, settings: PADSettings, seed: int, precision: str = "auto") -> dict[str, Any]:
    """Everything that shapes one expert (not ``num_experts``: expert k is the same in any study)."""
    return {
        "kind": "pad-expert",
        "precision": resolve_precision(precision, data.train_x.device),
        "data": _cache.data_identity(data),
        "expert": {f: getattr(settings, f) for f in _EXPERT_FIELDS}
        # only when set: plain-SGD experts keep the keys of the caches built before the option
        | ({"sam_rho": settings.expert_sam_rho} if settings.expert_sam_rho else {}),
        "schedule": {f: getattr(settings, f) for f in _SCHEDULE_FIELDS},
        "scores": score_description(data, settings, seed, precision),
        "dsa": dsa_strategy(settings, data),
        "seed": seed,
    }


def expert_dir(data: RealData, settings: PADSettings, seed: int, precision: str = "auto") -> Path:
    key = _cache.make_key(expert_description(data, settings, seed, precision))
    return _cache.cache_root(settings.cache_dir) / "pad" / "experts" / f"{data.name}-{settings.arch}-{key}"


def network_layout(settings: PADSettings, data: RealData) -> ParamLayout:
    return ParamLayout.of(seeded_network(settings.arch, data.channels, data.num_classes, data.image_size, 0))


def train_expert(
    data: RealData,
    sorted_per_class: list[torch.Tensor],
    settings: PADSettings,
    seed: int,
    index: int,
    progress: bool = False,
    precision: str = "auto",
) -> dict[str, Any]:
    """Train expert ``index``; returns its trajectory ``[E + 1, P]`` (CPU), train logits and val accuracy.

    Under bf16 the network computes in bf16 but its weights (the trajectory) stay fp32.
    """
    precision = resolve_precision(precision, data.train_x.device)
    expert_seed = _cache.derive_seed(seed, "expert", index)
    generator = torch.Generator().manual_seed(expert_seed)
    device = data.train_x.device
    net = seeded_network(settings.arch, data.channels, data.num_classes, data.image_size, expert_seed).to(device)
    layout = ParamLayout.of(net)
    optimizer: torch.optim.Optimizer = torch.optim.SGD(
        net.parameters(), lr=settings.lr_teacher, momentum=settings.expert_momentum,
        weight_decay=settings.expert_weight_decay)
    if settings.expert_sam_rho:
        optimizer = SharpnessAware(optimizer, settings.expert_sam_rho)
    dsa = DSA(dsa_strategy(settings, data))
    snapshots = [layout.flatten(net).cpu()]
    for epoch in tqdm(range(settings.expert_train_epochs), desc=f"expert {index}", disable=not progress,
                      leave=False, unit="ep"):
        rows = epoch_indices(sorted_per_class, epoch, settings)
        train_epoch(net, optimizer, data.train_x, data.train_y, rows, settings.expert_batch, dsa, generator, precision)
        snapshots.append(layout.flatten(net).cpu())
    logits = predict(net, data.train_x, precision=precision).float().cpu()
    val_logits = predict(net, data.val_x, precision=precision)
    val_acc = float((val_logits.argmax(1) == data.val_y).float().mean()) if len(data.val_y) else float("nan")
    return {"trajectory": torch.stack(snapshots), "logits": logits, "val_acc": val_acc}


def _expected_shapes(data: RealData, settings: PADSettings, layout: ParamLayout) -> dict[str, tuple[int, ...]]:
    return {
        "trajectory": (settings.expert_train_epochs + 1, layout.total),
        "logits": (int(data.train_x.shape[0]), data.num_classes),
    }


def _expert_meta(key: str, index: int, layout: ParamLayout) -> dict[str, str]:
    return {"key": key, "index": str(index), "layout": layout.to_json()}


def _save_expert(path: Path, result: dict[str, Any], key: str, index: int, layout: ParamLayout) -> None:
    meta = _expert_meta(key, index, layout) | {"val_acc": repr(result["val_acc"])}
    _cache.write_verified(path, {"trajectory": result["trajectory"], "logits": result["logits"]}, meta)


def load_expert(path: Path, data: RealData, settings: PADSettings, key: str, index: int,
                layout: ParamLayout) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One verified, memory-mapped expert file; :class:`CacheError` if it is missing or corrupt."""
    tensors, meta = _cache.read_verified(path, _expert_meta(key, index, layout), _expected_shapes(data, settings, layout))
    trajectory = tensors["trajectory"]
    if not bool(torch.isfinite(trajectory).all()):
        raise _cache.CacheError(f"expert file {path} holds non-finite parameters (the expert diverged?)")
    return trajectory, tensors["logits"], float(meta.get("val_acc", "nan"))


def _worker(data: RealData, sorted_per_class: list[torch.Tensor], settings_dump: dict[str, Any], seed: int,
            index: int, path: str, key: str, device: str, threads: int, precision: str) -> str:
    """Process-pool entry: train one expert and write its file."""
    torch.set_num_threads(threads)
    settings = PADSettings.model_validate(settings_dump)
    data = data.to(device)
    result = train_expert(data, sorted_per_class, settings, seed, index, precision=precision)
    _save_expert(Path(path), result, key, index, ParamLayout.of(
        seeded_network(settings.arch, data.channels, data.num_classes, data.image_size, 0)))
    return path


def get_experts(
    data: RealData,
    settings: PADSettings,
    seed: int = 0,
    progress: bool = False,
    build: bool = True,
    workers: int | None = None,
    precision: str = "auto",
) -> ExpertBuffer:
    """The ``num_experts`` experts for these settings: cache hits are loaded, the rest are trained.

    With ``build=False`` a missing or corrupt expert is a :class:`DDSearchError` instead.
    ``workers > 1`` trains missing experts in spawned processes (one thread each), so a script that
    calls this needs the usual ``if __name__ == "__main__":`` guard; the CLI has it.
    """
    layout = network_layout(settings, data)
    precision = resolve_precision(precision, data.train_x.device)
    key = _cache.make_key(expert_description(data, settings, seed, precision))
    directory = expert_dir(data, settings, seed, precision)
    paths = [directory / f"expert_{k:03d}.safetensors" for k in range(settings.num_experts)]
    workers = workers or settings.workers
    loaded: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}
    with _cache.locked(directory):
        missing = []
        for k, path in enumerate(paths):
            if not path.is_file():
                missing.append(k)
                continue
            try:
                loaded[k] = load_expert(path, data, settings, key, k, layout)
            except _cache.CacheError as err:
                if not build:
                    raise DDSearchError(f"{err}; run `ddsearch experts` to rebuild it") from None
                warnings.warn(f"{err}; retraining expert {k}", stacklevel=2)
                missing.append(k)
        if missing and not build:
            raise DDSearchError(
                f"{len(missing)} of {settings.num_experts} experts are not in the cache {directory}; "
                "build them with `ddsearch experts STUDY.yaml`"
            )
        if missing:
            scores, _, _ = get_scores(data, settings, seed, progress=progress, precision=precision)
            order = sort_by_score(scores, data.class_indices)
            _build(data, order, settings, seed, missing, paths, key, layout, progress, workers, precision)
            for k in missing:
                loaded[k] = load_expert(paths[k], data, settings, key, k, layout)
    return ExpertBuffer(
        trajectories=[loaded[k][0] for k in range(settings.num_experts)],
        logits=[loaded[k][1] for k in range(settings.num_experts)],
        val_acc=[loaded[k][2] for k in range(settings.num_experts)],
        layout=layout,
        paths=paths,
        key=key,
        built=len(missing),
    )


def _build(data: RealData, order: list[torch.Tensor], settings: PADSettings, seed: int, missing: list[int],
           paths: list[Path], key: str, layout: ParamLayout, progress: bool, workers: int, precision: str) -> None:
    start = time.perf_counter()
    bar = tqdm(total=len(missing), desc="experts", disable=not progress, unit="expert")
    if workers <= 1 or len(missing) == 1:
        for k in missing:
            result = train_expert(data, order, settings, seed, k, progress=progress, precision=precision)
            _save_expert(paths[k], result, key, k, layout)
            bar.update(1)
            bar.set_postfix(val_acc=f"{result['val_acc']:.3f}")
    else:
        import torch.multiprocessing as mp

        workers = min(workers, len(missing))
        threads = max(1, (os.cpu_count() or 1) // workers)
        cpu_data = data.to("cpu")
        device = str(data.train_x.device)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [
                pool.submit(_worker, cpu_data, order, settings.model_dump(), seed, k, str(paths[k]), key, device, threads,
                            precision)
                for k in missing
            ]
            for future in futures:
                future.result()
                bar.update(1)
    bar.close()
    if progress:
        tqdm.write(f"trained {len(missing)} expert(s) in {time.perf_counter() - start:.1f}s -> {paths[0].parent}")
