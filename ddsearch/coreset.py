"""Coreset selection controls: herding and k-center on a network's embedding.

A distilled set has to beat *chosen* real images, not only random ones, before its cost is
worth paying. The Dataset Condensation papers compare against both selectors, run per class in
the feature space of a ConvNet trained on the real data; that is what this module does.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

from ddsearch.data import RealData
from ddsearch.errors import DDSearchError
from ddsearch.evaluate import TrainSettings, build_network, predict, train_network
from ddsearch.synset import SyntheticSet

Selector = Literal["herding", "kcenter"]
SELECTORS: tuple[str, ...] = ("herding", "kcenter")
CONTROLS: tuple[str, ...] = ("random", *SELECTORS)  # the real-image sets a distilled set must beat


def herding(features: Tensor, k: int) -> Tensor:
    """Indices of ``k`` rows whose running mean tracks the mean of all rows (Welling, 2009).

    Greedy: step ``t`` picks the unpicked row that brings the mean of the ``t`` picks closest to
    the full mean, so early prefixes are already representative.
    """
    n = features.shape[0]
    _check_k(n, k)
    target = features.mean(0)
    picked: list[int] = []
    total = torch.zeros_like(target)
    available = torch.ones(n, dtype=torch.bool, device=features.device)
    for t in range(1, k + 1):
        gaps = ((total + features) / t - target).norm(dim=1)
        gaps[~available] = float("inf")
        best = int(gaps.argmin())
        picked.append(best)
        total += features[best]
        available[best] = False
    return torch.tensor(picked, dtype=torch.long)


def k_center(features: Tensor, k: int) -> Tensor:
    """Indices of ``k`` rows chosen by greedy farthest-point traversal (Sener & Savarese, 2018).

    Starts from the row nearest the mean, then repeatedly adds the row farthest from every pick:
    a 2-approximation of the smallest covering radius.
    """
    n = features.shape[0]
    _check_k(n, k)
    first = int((features - features.mean(0)).norm(dim=1).argmin())
    picked = [first]
    nearest = (features - features[first]).norm(dim=1)
    for _ in range(k - 1):
        best = int(nearest.argmax())
        picked.append(best)
        nearest = torch.minimum(nearest, (features - features[best]).norm(dim=1))
    return torch.tensor(picked, dtype=torch.long)


def _check_k(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise DDSearchError(f"cannot select {k} of {n} images; choose between 1 and {n} per class")


def embedding_network(data: RealData, arch: str = "ConvNet", epochs: int = 1, seed: int = 0,
                      progress: bool = False) -> torch.nn.Module:
    """A network trained briefly on the real training split, whose embedding the selectors use."""
    net = build_network(arch, data, seed, data.train_x.device)
    if not hasattr(net, "embed"):
        raise DDSearchError(f"{arch} has no embedding to select in; use a ConvNet or ResNet architecture")
    if epochs > 0:
        train_network(net, data.train_x, data.train_y, TrainSettings(epochs=epochs, dsa_strategy="none"), seed,
                      progress=progress, desc=f"selectors' embedding ({arch})")
    return net.eval()


def select_rows(data: RealData, ipc: int, selector: Selector, net: torch.nn.Module) -> Tensor:
    """Rows of the training split: ``ipc`` per class, class by class, chosen by ``selector`` in ``net``'s embedding."""
    if selector not in SELECTORS:
        raise DDSearchError(f"unknown selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    data.check_ipc(ipc)
    pick = herding if selector == "herding" else k_center
    with torch.no_grad():
        features = predict(_Embedder(net), data.train_x)
    return torch.cat([idx[pick(features[idx], ipc).to(idx.device)] for idx in data.class_indices])


def herding_rows(data: RealData, ipc: int, arch: str, embed_epochs: int, seed: int) -> Tensor:
    """The herding control's picks, as a distiller's starting images (``method.init: herding``)."""
    return select_rows(data, ipc, "herding", embedding_network(data, arch, epochs=embed_epochs, seed=seed))


def select_coreset(data: RealData, ipc: int, selector: Selector, net: torch.nn.Module) -> SyntheticSet:
    """``ipc`` real training images per class, chosen by ``selector`` in ``net``'s embedding."""
    rows = select_rows(data, ipc, selector, net)
    return SyntheticSet(
        images=data.train_x[rows].clone(), labels=data.train_y[rows].clone(), num_classes=data.num_classes,
        dataset=data.name, mean=tuple(data.mean), std=tuple(data.std), method=selector,
        class_names=list(data.class_names),
    )


def control_set(data: RealData, ipc: int, control: str, embedder: Callable[[], torch.nn.Module],
                seed: int = 0) -> SyntheticSet:
    """A control at ``ipc``: random real images per class (drawn with ``seed``), or a selector's picks.

    ``embedder`` builds the selectors' embedding network only when a selector needs it, so callers
    can share one network across controls and IPCs.
    """
    if control not in CONTROLS:
        raise DDSearchError(f"unknown control {control!r}; choose from {', '.join(CONTROLS)}")
    if control != "random":
        return select_coreset(data, ipc, control, embedder())  # type: ignore[arg-type]
    x, y = data.subset(ipc, torch.Generator().manual_seed(seed))
    return SyntheticSet(images=x, labels=y, num_classes=data.num_classes, dataset=data.name, mean=tuple(data.mean),
                        std=tuple(data.std), method="random", class_names=list(data.class_names))


class _Embedder(torch.nn.Module):
    """Adapts ``net.embed`` to :func:`predict`, which batches a module's forward pass."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.embed(x)
