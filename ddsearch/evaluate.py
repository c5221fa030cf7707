"""Evaluate a distilled set: train a named architecture from scratch on it, score val and test.

The protocol follows the Dataset Condensation papers (SGD, momentum 0.9, weight decay 5e-4,
lr x0.1 at half of the epochs, DSA during training, batch 256), so our numbers are comparable
with the published ones. In-memory tensors are batched by indexing: no DataLoader.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ddsearch.augment import DSA, FULL_STRATEGY
from ddsearch.data import RealData
from ddsearch.models import seeded_network
from ddsearch.precision import autocast, resolve_precision
from ddsearch.repeat_workers import NetworkShape, train_in_workers, worker_count
from ddsearch.synset import SyntheticSet


@dataclass(frozen=True)
class TrainSettings:
    """How an evaluator network is trained; the defaults are the papers' protocol."""

    epochs: int = 1000
    lr: float = 0.01
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dsa_strategy: str = FULL_STRATEGY
    # Train independent repeats together under torch.func.vmap. None: only on GPUs, since on CPU
    # the stacked (grouped) convolutions measured 2x slower (benchmarks/results/evaluate_repeats_cpu.md).
    batch_repeats: bool | None = None
    # Network compute precision (ddsearch.precision): bf16 under autocast with fp32 master weights.
    precision: str = "auto"
    # Processes that train repeats side by side on a CPU (ddsearch.repeat_workers): a gain only
    # where other work shares the cores. None or 1: in-process.
    workers: int | None = None


def two_std(std_a: float | None, std_b: float | None) -> float:
    """Twice the std of a difference of two independent means: the bar a gap must clear to count."""
    return 2 * math.hypot(std_a or 0.0, std_b or 0.0)


@dataclass
class EvalResult:
    """Accuracies of independent repeats (fresh init and shuffles per repeat), in [0, 1]."""

    arch: str
    val_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    epochs: int = 0
    precision: str = "fp32"

    @staticmethod
    def _stats(values: list[float]) -> tuple[float, float]:
        if not values:
            return float("nan"), float("nan")
        return float(np.mean(values)), float(np.std(values))

    @property
    def val_mean(self) -> float:
        return self._stats(self.val_acc)[0]

    @property
    def val_std(self) -> float:
        return self._stats(self.val_acc)[1]

    @property
    def test_mean(self) -> float:
        return self._stats(self.test_acc)[0]

    @property
    def test_std(self) -> float:
        return self._stats(self.test_acc)[1]

    @property
    def repeats(self) -> int:
        return len(self.test_acc) or len(self.val_acc)

    def summary(self) -> dict[str, float | int | str]:
        return {
            "arch": self.arch,
            "val_acc_mean": self.val_mean,
            "val_acc_std": self.val_std,
            "test_acc_mean": self.test_mean,
            "test_acc_std": self.test_std,
            "repeats": self.repeats,
            "epochs": self.epochs,
            "precision": self.precision,
            "train_seconds": self.train_seconds,
        }

    def as_dict(self) -> dict:
        return asdict(self) | self.summary()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for hard ids, or for soft label logits (turned into probabilities)."""
    return soft_cross_entropy_per_sample(logits, targets).mean()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024, precision: str = "fp32") -> torch.Tensor:
    """Logits (fp32) in eval mode, in batches; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    with autocast(precision, x.device):
        logits = torch.cat([model(x[start : start + batch_size]).float() for start in range(0, x.shape[0], batch_size)])
    model.train(was_training)
    return logits


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024, precision: str = "fp32") -> float:
    """Top-1 accuracy in eval mode; one host sync at the end."""
    if x.shape[0] == 0:
        return float("nan")
    return (predict(model, x, batch_size, precision).argmax(dim=1) == y).sum().item() / x.shape[0]


def build_network(arch: str, data: RealData, seed: int, device: torch.device | str) -> nn.Module:
    """A freshly initialised network for ``data`` whose weights depend only on ``seed``."""
    return seeded_network(arch, data.channels, data.num_classes, data.image_size, seed).to(device)


def sgd_with_step_decay(params, settings: TrainSettings):
    """The papers' optimiser: SGD with momentum and weight decay, lr x0.1 at half of the epochs."""
    optimizer = torch.optim.SGD(
        list(params), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[settings.epochs // 2], gamma=0.1)
    return optimizer, scheduler


def train_network(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    seed: int,
    progress: bool = False,
    desc: str = "train",
    on_epoch: Callable[[], None] | None = None,
) -> nn.Module:
    """Train ``net`` on in-memory tensors with SGD, step decay at half, and per-image DSA."""
    generator = torch.Generator().manual_seed(seed)
    dsa = DSA(settings.dsa_strategy)
    optimizer, scheduler = sgd_with_step_decay(net.parameters(), settings)
    every_row = torch.arange(x.shape[0])
    precision = resolve_precision(settings.precision, x.device)
    for _ in tqdm(range(settings.epochs), desc=desc, disable=not progress, leave=False, unit="ep"):
        train_epoch(net, optimizer, x, y, every_row, settings.batch_size, dsa, generator, precision)
        scheduler.step()
        if on_epoch is not None:
            on_epoch()
    return net


def train_epoch(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    batch_size: int,
    dsa: DSA,
    generator: torch.Generator,
    precision: str = "fp32",
) -> None:
    """One pass over ``x[indices]`` (CPU indices) in a random order, with per-image DSA.

    All randomness comes from ``generator``; labels may be hard ids or soft-label logits. Under
    bf16 only the network runs in low precision; augmentation, loss and SGD stay fp32. The
    optimiser steps with a closure, so a sharpness-aware one can take its second gradient.
    """
    net.train()
    order = indices[torch.randperm(len(indices), generator=generator)].to(x.device, non_blocking=True)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch, targets = dsa(x[idx], generator=generator), y[idx]

        def closure() -> torch.Tensor:  # SharpnessAware evaluates it twice on the same batch
            optimizer.zero_grad(set_to_none=True)
            with autocast(precision, x.device):
                logits = net(batch)
            loss = soft_cross_entropy(logits.float(), targets)
            loss.backward()
            return loss

        optimizer.step(closure)


def evaluate_synset(
    synset: SyntheticSet,
    data: RealData,
    arch: str,
    settings: TrainSettings | None = None,
    repeats: int = 1,
    seed: int = 0,
    use_learned_lr: bool = True,
    test: bool = True,
    progress: bool = False,
) -> EvalResult:
    """Train ``arch`` from scratch on the synset ``repeats`` times; report val (and test) accuracy."""
    settings = settings or TrainSettings()
    if use_learned_lr and synset.lr is not None:
        settings = TrainSettings(**(asdict(settings) | {"lr": float(synset.lr)}))
    synset.check_fits(data)
    device = data.train_x.device
    x = synset.images.detach().to(device)
    y = synset.labels.detach().to(device)
    return _repeat_training(arch, data, x, y, settings, repeats, seed, test, progress)


def train_on_real(
    data: RealData,
    arch: str,
    settings: TrainSettings | None = None,
    repeats: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> EvalResult:
    """The full-data baseline: the same protocol on the whole real training split."""
    settings = settings or TrainSettings(epochs=20)
    return _repeat_training(arch, data, data.train_x, data.train_y, settings, repeats, seed, True, progress)


def _repeat_training(
    arch: str,
    data: RealData,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    repeats: int,
    seed: int,
    test: bool,
    progress: bool,
) -> EvalResult:
    precision = resolve_precision(settings.precision, x.device)
    settings = replace(settings, precision=precision)
    result = EvalResult(arch=arch, epochs=settings.epochs, precision=precision)
    start = time.perf_counter()
    seeds = [seed * 1000 + r for r in range(repeats)]
    nets = [build_network(arch, data, s, x.device) for s in seeds]
    stack = settings.batch_repeats if settings.batch_repeats is not None else x.device.type == "cuda"
    workers = worker_count(repeats, x.device, settings.workers)
    if repeats > 1 and stack and can_batch(nets[0]):
        train_stacked(nets, x, y, settings, seed, progress, desc=f"{arch} x{repeats}")
    elif workers > 1:
        shape = NetworkShape(data.name, data.channels, data.num_classes, data.image_size)
        train_in_workers(nets, seeds, arch, shape, x, y, settings, workers, progress, desc=f"{arch} x{repeats}")
    else:
        for r, (net, run_seed) in enumerate(zip(nets, seeds)):
            train_network(net, x, y, settings, run_seed, progress, desc=f"{arch} {r + 1}/{repeats}")
    for net in nets:
        result.val_acc.append(accuracy(net, data.val_x, data.val_y, precision=precision))
        if test:
            result.test_acc.append(accuracy(net, data.test_x, data.test_y, precision=precision))
    result.train_seconds = time.perf_counter() - start
    return result


def can_batch(net: nn.Module) -> bool:
    """Batch norm keeps running statistics in place, which vmap cannot do in train mode."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def train_stacked(
    nets: list[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    seed: int,
    progress: bool = False,
    desc: str = "train",
) -> None:
    """Train independent copies at once: stacked weights, one vmapped forward per batch.

    Each repeat keeps its own initialisation, shuffling and augmentation; the loss is the sum
    of the repeats' mean losses, so every copy sees exactly the gradient it would see alone,
    and SGD (momentum, weight decay) acts element-wise. Results land back in ``nets``.
    """
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(nets)
    template = copy.deepcopy(nets[0]).to("meta")

    def forward(p: dict, b: dict, batch: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (p, b), (batch,))

    batched_forward = vmap(forward, randomness="different")
    generator = torch.Generator().manual_seed(seed)
    dsa = DSA(settings.dsa_strategy)
    optimizer, scheduler = sgd_with_step_decay(params.values(), settings)
    precision = resolve_precision(settings.precision, x.device)
    repeats, n = len(nets), x.shape[0]
    for _ in tqdm(range(settings.epochs), desc=desc, disable=not progress, leave=False, unit="ep"):
        orders = torch.stack([torch.randperm(n, generator=generator) for _ in range(repeats)]).to(x.device, non_blocking=True)
        for b in range(math.ceil(n / settings.batch_size)):
            idx = orders[:, b * settings.batch_size : (b + 1) * settings.batch_size]
            batch = dsa(x[idx.flatten()], generator=generator).view(*idx.shape, *x.shape[1:])
            with autocast(precision, x.device):
                logits = batched_forward(params, buffers, batch).float()
            targets = y[idx.flatten()]
            per_image = soft_cross_entropy_per_sample(logits.flatten(0, 1), targets)
            loss = per_image.view(idx.shape).mean(dim=1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    with torch.no_grad():
        for r, net in enumerate(nets):
            net.load_state_dict({k: v[r] for k, v in (params | buffers).items()})


def soft_cross_entropy_per_sample(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.is_floating_point():
        return F.cross_entropy(logits, targets.softmax(dim=1), reduction="none")
    return F.cross_entropy(logits, targets, reduction="none")
