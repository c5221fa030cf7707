"""The in-memory real data set that every distiller and evaluator draws from.

The whole data set lives on the device as one tensor per split plus per-class index
lists, so batches are drawn by indexing (no DataLoader, no host round trips).
This module also holds the split logic: a deterministic, stratified validation split
carved from the training set, and the per-channel normalisation computed on what is
left of the training set after that split.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ddsearch.errors import DDSearchError


@dataclass
class RawSplits:
    """What a source loader hands back: un-normalised official train and test splits.

    Images are [N, C, H, W], either uint8 (0..255) or float32 already in [0, 1].
    ``*_source_idx`` index the source's own numbering (e.g. the official training
    set, or ``load_digits`` for digits) so tests and users can check disjointness.
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    class_names: list[str]
    train_source_idx: Tensor | None = None
    test_source_idx: Tensor | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.train_x.shape[-2]), int(self.train_x.shape[-1]))


@dataclass
class RealData:
    """A labelled image data set, normalised and resident on one device.

    ``train_x``/``val_x``/``test_x`` are float32 [N, C, H, W] normalised with ``mean``/``std``
    (computed on the training split only); labels are int64. ``class_indices[c]`` holds the
    rows of ``train_x`` of class ``c`` on the same device. The ``*_source_idx`` tensors
    (CPU, int64) record which source images went where; they are bookkeeping, never moved.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    class_indices: list[Tensor]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    train_source_idx: Tensor | None = field(default=None, repr=False)
    val_source_idx: Tensor | None = field(default=None, repr=False)
    test_source_idx: Tensor | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ shape info
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.train_x.shape[2]), int(self.train_x.shape[3]))

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def __repr__(self) -> str:
        c, (h, w) = self.channels, self.image_size
        return (
            f"RealData({self.name!r}, train={len(self.train_y)}, val={len(self.val_y)}, "
            f"test={len(self.test_y)}, classes={self.num_classes}, shape=({c}, {h}, {w}), device={self.device})"
        )

    # ------------------------------------------------------------------ movement
    def to(self, device: str | torch.device) -> RealData:
        """Return a copy with every data tensor on ``device`` (source indices stay on the CPU)."""
        device = torch.device(device)
        moved = {
            k: getattr(self, k).to(device)
            for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
        }
        return dataclasses.replace(self, class_indices=[i.to(device) for i in self.class_indices], **moved)

    # ------------------------------------------------------------------ sampling
    def sample(self, c: int, n: int, generator: torch.Generator) -> Tensor:
        """Draw ``min(n, class size)`` random training images of class ``c`` without replacement.

        Like the reference code, a request larger than the class returns the whole class
        (shuffled). The permutation comes from the CPU ``generator`` (so runs are reproducible
        whatever the device) and is moved to the data's device with a non-blocking copy.
        """
        idx = self.class_indices[c]
        perm = torch.randperm(len(idx), generator=generator)[:n]
        return self.train_x[idx[perm.to(idx.device, non_blocking=True)]]

    def sample_classes(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` random images of every class, class-contiguous, gathered in one indexing op."""
        picks = [idx[torch.randperm(len(idx), generator=generator)[:n].to(idx.device, non_blocking=True)]
                 for idx in self.class_indices]
        return self.train_x[torch.cat(picks)]

    def min_class_count(self) -> int:
        """The number of training images in the smallest class (the largest usable ipc)."""
        return min(len(i) for i in self.class_indices)

    def check_ipc(self, ipc: int) -> None:
        """Fail early, with a fix, when ``ipc`` images per class cannot be drawn from the real set."""
        if isinstance(ipc, bool) or not isinstance(ipc, (int, np.integer)) or ipc < 1:
            raise DDSearchError(f"ipc must be a positive integer, got {ipc!r}")
        counts = [len(i) for i in self.class_indices]
        smallest = int(np.argmin(counts))
        if ipc > counts[smallest]:
            raise DDSearchError(
                f"ipc {ipc} is larger than the smallest class (class {self.class_names[smallest]!r} "
                f"has {counts[smallest]} training images); lower ipc"
            )

    def subset(self, ipc: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A random real subset with ``ipc`` images per class: the "random selection" baseline.

        Returns (images, labels) ordered by class, on the data's device.
        """
        self.check_ipc(ipc)
        xs = [self.sample(c, ipc, generator) for c in range(self.num_classes)]
        y = torch.arange(self.num_classes, device=self.device).repeat_interleave(ipc)
        return torch.cat(xs), y

    # ------------------------------------------------------------------ display
    def denormalize(self, x: Tensor) -> Tensor:
        """Undo the normalisation and clamp to [0, 1], for image grids. Works on [C,H,W] or [N,C,H,W]."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x * std + mean).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------- splitting
def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` held-out slots across classes proportionally to ``counts``.

    Largest-remainder rounding, then two constraints: every class with >= 2 images gets
    >= 1 slot, and every class keeps >= 1 image on the other side. Each class ends within
    one slot of its exact proportional share unless a constraint forces otherwise.
    """
    counts = counts.astype(np.int64)
    if total == 0:
        return np.zeros_like(counts)
    quota = total * counts / counts.sum()
    low = (counts >= 2).astype(np.int64)  # at least one held out where possible
    cap = np.maximum(counts - 1, 0)  # at least one kept
    alloc = np.clip(np.floor(quota).astype(np.int64), low, cap)
    # np.argmax takes the lowest index on ties, so the result is deterministic.
    while alloc.sum() < total:
        gap = np.where(alloc < cap, quota - alloc, -np.inf)
        alloc[int(np.argmax(gap))] += 1
    while alloc.sum() > total:
        gap = np.where(alloc > low, quota - alloc, np.inf)
        alloc[int(np.argmin(gap))] -= 1
    return alloc


def stratified_split(labels: Tensor, size: float | int, seed: int) -> tuple[Tensor, Tensor]:
    """Split row indices into (kept, held_out), stratified by label and fixed by ``seed``.

    ``size`` is a fraction in [0, 1) or an absolute count. A fraction is rounded and then
    raised, if needed, so that every class with >= 2 images contributes at least one held-out
    image; an absolute count is honoured exactly and must be large enough for that. The result
    depends only on ``labels``, ``size`` and ``seed``; both index tensors are sorted.
    """
    labels = labels.cpu().long()
    n = len(labels)
    num_classes = int(labels.max()) + 1 if n else 0
    counts = np.bincount(labels.numpy(), minlength=num_classes)
    present = int((counts > 0).sum())
    need = int((counts >= 2).sum())
    most = n - present  # each present class keeps at least one image

    if isinstance(size, bool) or not isinstance(size, numbers.Real) or size < 0:
        raise DDSearchError(f"split size must be a fraction in [0, 1) or a count >= 0, got {size!r}")
    if isinstance(size, (float, np.floating)) and size < 1:  # a fraction
        total = int(round(float(size) * n))
        if size > 0:
            total = min(max(total, need), most)
    elif float(size).is_integer():  # an absolute count
        total = int(size)
        if total > most:
            raise DDSearchError(
                f"split size {total} leaves no training images for some class "
                f"({n} images in {present} classes; use at most {most})"
            )
        if 0 < total < need:
            raise DDSearchError(
                f"split size {total} is smaller than the number of classes ({need}); "
                f"use at least {need} so every class is represented, or 0 for no split"
            )
    else:
        raise DDSearchError(f"split size must be a fraction in [0, 1) or a whole count, got {size!r}")

    alloc = _allocate(counts, total)
    g = torch.Generator().manual_seed(int(seed))
    order = torch.argsort(labels, stable=True)
    kept, held = [], []
    start = 0
    for c in range(num_classes):
        idx_c = order[start : start + counts[c]]
        start += counts[c]
        perm = idx_c[torch.randperm(len(idx_c), generator=g)]
        held.append(perm[: alloc[c]])
        kept.append(perm[alloc[c] :])
    kept_t = torch.cat(kept) if kept else torch.empty(0, dtype=torch.long)
    held_t = torch.cat(held) if held else torch.empty(0, dtype=torch.long)
    return torch.sort(kept_t).values, torch.sort(held_t).values


# ---------------------------------------------------------------------- building
def to_unit_float(x: Tensor) -> Tensor:
    """uint8 0..255 -> float32 0..1; float images are assumed to be in [0, 1] already."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def resize(x: Tensor, size: tuple[int, int], chunk: int = 8192) -> Tensor:
    """Antialiased bilinear resize of [N, C, H, W] images in [0, 1] (chunked to bound memory)."""
    x = to_unit_float(x)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], *size), dtype=torch.float32)
    for s in range(0, x.shape[0], chunk):
        out[s : s + chunk] = torch.nn.functional.interpolate(
            x[s : s + chunk], size=size, mode="bilinear", antialias=True, align_corners=False
        )
    return out.clamp_(0.0, 1.0)


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std; a constant channel gets std 1 to avoid dividing by 0."""
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def build_real_data(
    name: str,
    raw: RawSplits,
    val_size: float | int = 0.1,
    split_seed: int = 0,
    device: str | torch.device = "cpu",
) -> RealData:
    """Carve the validation split, normalise with train statistics and move to ``device``."""
    if len(raw.class_names) < 2:
        found = f"only class {raw.class_names[0]!r}" if raw.class_names else "no classes"
        raise DDSearchError(f"data set '{name}' has {found}; classification needs at least two classes "
                            f"(an image folder needs one sub-folder per class)")
    train_pos, val_pos = stratified_split(raw.train_y, val_size, split_seed)
    train_x, val_x = to_unit_float(raw.train_x[train_pos]), to_unit_float(raw.train_x[val_pos])
    test_x = to_unit_float(raw.test_x)
    if test_x.data_ptr() == raw.test_x.data_ptr():
        test_x = test_x.clone()  # normalised in place below; never alias the caller's tensor
    mean, std = channel_stats(train_x)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    for x in (train_x, val_x, test_x):
        x.sub_(m).div_(s)

    train_y = raw.train_y[train_pos].long()
    num_classes = len(raw.class_names)
    class_indices = [torch.nonzero(train_y == c).flatten() for c in range(num_classes)]
    src = raw.train_source_idx if raw.train_source_idx is not None else torch.arange(len(raw.train_y))
    test_src = raw.test_source_idx if raw.test_source_idx is not None else torch.arange(len(raw.test_y))
    data = RealData(
        name=name,
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=raw.train_y[val_pos].long(),
        test_x=test_x,
        test_y=raw.test_y.long().clone(),
        class_indices=class_indices,
        mean=mean,
        std=std,
        class_names=list(raw.class_names),
        train_source_idx=src[train_pos],
        val_source_idx=src[val_pos],
        test_source_idx=test_src.clone(),
    )
    return data.to(device)


__all__: Sequence[str] = [
    "RawSplits",
    "RealData",
    "build_real_data",
    "channel_stats",
    "resize",
    "stratified_split",
    "to_unit_float",
]
