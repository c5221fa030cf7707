"""Per-sample difficulty scores for PAD's data scheduler: EL2N (default) or GraNd.

- EL2N (Paul et al., 2021): ``|| softmax(f(x)) - onehot(y) ||_2``;
- GraNd: ``|| d loss(f(x), y) / d theta ||_2`` over all parameters, per sample (torch.func vmap).

Both are averaged over ``score_models`` networks of ``arch``, each trained for ``score_epochs``
epochs on the full training split (SGD, lr_teacher, momentum 0.9, DSA), i.e. early in training.
A larger score means a harder sample. Scores are cached on disk under a key of the data set's
identity, the architecture, the score settings and the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from ddsearch.augment import DSA, resolve_strategy
from ddsearch.methods.pad.settings import PADSettings
from ddsearch.data import RealData
from ddsearch.methods.pad import _cache
from ddsearch.evaluate import predict, train_epoch
from ddsearch.precision import resolve_precision
from ddsearch.models import seeded_network

SCORE_MOMENTUM = 0.9
GRAND_CHUNK = 64


def dsa_strategy(settings: PADSettings, data: RealData) -> str:
    return resolve_strategy(settings.dsa_strategy, data.name)


def score_description(data: RealData, settings: PADSettings, seed: int, precision: str = "auto") -> dict[str, Any]:
    """Everything that shapes the scores; its hash is the cache key."""
    return {
        "precision": resolve_precision(precision, data.train_x.device),
        "kind": "pad-scores",
        "data": _cache.data_identity(data),
        "arch": settings.arch,
        "score": settings.score,
        "score_models": settings.score_models,
        "score_epochs": settings.score_epochs,
        "lr": settings.lr_teacher,
        "momentum": SCORE_MOMENTUM,
        "batch": settings.expert_batch,
        "dsa": dsa_strategy(settings, data),
        "seed": seed,
    }


def scores_path(data: RealData, settings: PADSettings, seed: int, precision: str = "auto") -> Path:
    key = _cache.make_key(score_description(data, settings, seed, precision))
    return _cache.cache_root(settings.cache_dir) / "pad" / "scores" / f"{data.name}-{key}.safetensors"


def el2n(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``|| softmax(logits) - onehot(y) ||_2`` per row."""
    return (logits.softmax(dim=1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)).norm(dim=1)


def grand(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = GRAND_CHUNK) -> torch.Tensor:
    """Per-sample gradient norm of the cross-entropy over all parameters (eval-mode network)."""
    net.eval()
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(net, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    norms = []
    for s in range(0, x.shape[0], chunk):
        grads = per_sample(params, x[s : s + chunk], y[s : s + chunk])
        squared = sum(g.flatten(1).square().sum(dim=1) for g in grads.values())
        norms.append(squared.sqrt())
    return torch.cat(norms)


def compute_scores(
    data: RealData, settings: PADSettings, seed: int = 0, progress: bool = False, precision: str = "auto"
) -> torch.Tensor:
    """Scores of every training sample (float32 [N] on the CPU), without the cache."""
    precision = resolve_precision(precision, data.train_x.device)
    dsa = DSA(dsa_strategy(settings, data))
    x, y = data.train_x, data.train_y
    all_rows = torch.arange(x.shape[0])
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    bar = tqdm(total=settings.score_models * max(settings.score_epochs, 1), desc=f"{settings.score} scores",
               disable=not progress, unit="ep")
    for m in range(settings.score_models):
        net_seed = _cache.derive_seed(seed, "score", m)
        generator = torch.Generator().manual_seed(net_seed)
        net = seeded_network(settings.arch, data.channels, data.num_classes, data.image_size, net_seed).to(x.device)
        optimizer = torch.optim.SGD(net.parameters(), lr=settings.lr_teacher, momentum=SCORE_MOMENTUM)
        for _ in range(settings.score_epochs):
            train_epoch(net, optimizer, x, y, all_rows, settings.expert_batch, dsa, generator, precision)
            bar.update(1)
        if settings.score == "el2n":
            score = el2n(predict(net, x, precision=precision), y)
        else:
            score = grand(net, x, y)
        total += score.detach().double().cpu()
        if settings.score_epochs == 0:
            bar.update(1)
    bar.close()
    return (total / settings.score_models).float()


def get_scores(
    data: RealData,
    settings: PADSettings,
    seed: int = 0,
    progress: bool = False,
    rebuild: bool = False,
    precision: str = "auto",
) -> tuple[torch.Tensor, Path, bool]:
    """``(scores, cache file, was_cached)``: load the cached scores, or compute and store them.

    A cache file that fails verification is recomputed and replaced, never used.
    """
    path = scores_path(data, settings, seed, precision)
    key = _cache.make_key(score_description(data, settings, seed, precision))
    n = int(data.train_x.shape[0])
    expect = {"key": key}
    with _cache.locked(path.parent):
        if path.is_file() and not rebuild:
            try:
                tensors, _ = _cache.read_verified(path, expect, {"scores": (n,)})
                return tensors["scores"].clone(), path, True
            except _cache.CacheError as err:
                import warnings

                warnings.warn(f"{err}; recomputing the scores", stacklevel=2)
        scores = compute_scores(data, settings, seed, progress, precision)
        _cache.write_verified(path, {"scores": scores}, {"key": key, "score": settings.score})
    return scores, path, False
