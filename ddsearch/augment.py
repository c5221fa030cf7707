"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021).

Distillation matches statistics of real and synthetic batches; DSA augments both with the *same*
random transform so the match stays meaningful, and keeps the transform differentiable so the
gradient reaches the synthetic images.

Unlike the reference code, randomness never touches torch's global seed: in Siamese mode every
random number comes from a private CPU generator seeded by the caller's ``seed``, so the transform
depends on ``seed`` alone (not on batch size, device or call order). Random numbers are drawn on the
CPU (a handful of scalars) and copied to the images' device without a host sync; all image math runs
on the images' device and dtype.

As in DC/DSA's 'S' mode, each call applies ONE transform family, chosen uniformly from the strategy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ddsearch.errors import DDSearchError, suggest

__all__ = ["DSA", "DSAParams", "FAMILIES", "FULL_STRATEGY", "default_strategy", "resolve_strategy"]

FAMILIES: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
# Every family: DSA's default strategy, which the released DataDAM code runs on every data set, MNIST too.
FULL_STRATEGY = "_".join(FAMILIES)
_DIGIT_DATASETS = frozenset({"digits", "mnist"})


@dataclass(frozen=True)
class DSAParams:
    """Strengths of the transforms; the defaults are those of the DC/DSA reference code."""

    prob_flip: float = 0.5  # chance of a horizontal flip
    ratio_scale: float = 1.2  # x and y scale factors drawn independently from [1/r, r]
    ratio_rotate: float = 15.0  # angle drawn from [-r, r] degrees
    ratio_crop_pad: float = 0.125  # integer shift of up to r * size pixels, zero-filled
    ratio_cutout: float = 0.5  # a zeroed square of side r * size
    brightness: float = 1.0  # add (u - 0.5) * b
    saturation: float = 2.0  # scale distance to the per-pixel channel mean by u * s
    contrast: float = 0.5  # scale distance to the image mean by u + c

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob_flip <= 1.0:
            raise DDSearchError(f"dsa prob_flip must lie in [0, 1], got {self.prob_flip}")
        if self.ratio_scale < 1.0:
            raise DDSearchError(f"dsa ratio_scale must be >= 1, got {self.ratio_scale}")
        for name in ("ratio_crop_pad", "ratio_cutout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DDSearchError(f"dsa {name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("ratio_rotate", "brightness", "saturation", "contrast"):
            if getattr(self, name) < 0.0:
                raise DDSearchError(f"dsa {name} must be >= 0, got {getattr(self, name)}")


def default_strategy(dataset_name: str) -> str:
    """The DSA strategy for a data set: digits are not mirror-symmetric, so they get no flip.

    Measured: flip in the evaluator lowers MNIST test accuracy, by 2.3 points for a distilled IPC 1 set
    however it was distilled, and by 0.8-0.9 for IPC 10 sets, distilled or herded
    (benchmarks/results/reproduce_cpu.md, ``--eval-dsa with-flip``).
    """
    if dataset_name.lower() in _DIGIT_DATASETS:
        return "_".join(family for family in FAMILIES if family != "flip")
    return FULL_STRATEGY


def resolve_strategy(strategy: str | None, dataset_name: str) -> str:
    """The strategy a study or flag names, with 'auto' (or none given) as the data set's default.

    The one place that rule lives: distillers, evaluators, PAD's scores and NAS all ask here.
    """
    return default_strategy(dataset_name) if strategy is None or strategy == "auto" else strategy


# --- random numbers: drawn on CPU from the generator, then moved to the images' device ----------


def _uniform(n: int, low: float, high: float, gen: torch.Generator | None, x: Tensor) -> Tensor:
    """n numbers from U[low, high) as a (n,) tensor on x's device and dtype."""
    u = torch.rand(n, generator=gen) * (high - low) + low
    return u.to(device=x.device, dtype=x.dtype, non_blocking=True)


def _randint(n: int, low: int, high: int, gen: torch.Generator | None, x: Tensor) -> Tensor:
    """n integers from [low, high) as a (n,) long tensor on x's device."""
    return torch.randint(low, high, (n,), generator=gen).to(device=x.device, non_blocking=True)


# --- geometry ------------------------------------------------------------------------------------


def _warp(x: Tensor, theta: Tensor, mode: str = "bilinear") -> Tensor:
    """Resample x through affine maps theta (n, 2, 3), n = 1 (shared) or len(x); zeros outside."""
    theta = theta.expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _affine(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Stack per-image coefficients (each of shape (n,)) into (n, 2, 3) matrices [[a b tx] [c d ty]]."""
    return torch.stack([torch.stack([a, b, tx], -1), torch.stack([c, d, ty], -1)], -2)


def _scale(x: Tensor, n: int, p: DSAParams, gen: torch.Generator | None) -> Tensor:
    """Zoom x and y independently by factors from [1/r, r]."""
    r = p.ratio_scale
    sx = _uniform(n, 1.0 / r, r, gen, x)
    sy = _uniform(n, 1.0 / r, r, gen, x)
    zero = torch.zeros_like(sx)
    return _warp(x, _affine(sx, zero, zero, sy, zero, zero))


def _rotate(x: Tensor, n: int, p: DSAParams, gen: torch.Generator | None) -> Tensor:
    """Rotate about the centre by an angle from [-r, r] degrees."""
    angle = _uniform(n, -p.ratio_rotate, p.ratio_rotate, gen, x) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(angle)
    return _warp(x, _affine(cos, -sin, sin, cos, zero, zero))


def _crop(x: Tensor, n: int, p: DSAParams, gen: torch.Generator | None) -> Tensor:
    """Shift by a whole number of pixels (pad-and-crop), filling with zeros.

    Nearest sampling at whole-pixel offsets copies pixels exactly, like the reference's pad+index.
    """
    h, w = x.shape[-2:]
    max_dy, max_dx = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
    dy = _randint(n, -max_dy, max_dy + 1, gen, x).to(x.dtype)
    dx = _randint(n, -max_dx, max_dx + 1, gen, x).to(x.dtype)
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    # A shift of k pixels is 2k/size in the [-1, 1] coordinates of affine_grid.
    return _warp(x, _affine(one, zero, zero, one, 2.0 * dx / w, 2.0 * dy / h), mode="nearest")


def _cutout(x: Tensor, n: int, p: DSAParams, gen: torch.Generator | None) -> Tensor:
    """Zero a square of side r * size centred at a random pixel (it may hang over the border)."""
    h, w = x.shape[-2:]
    size_y, size_x = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    # Even-sized squares may also centre one past the last pixel, as in the reference.
    cy = _randint(n, 0, h + (1 - size_y % 2), gen, x)
    cx = _randint(n, 0, w + (1 - size_x % 2), gen, x)
    top, left = (cy - size_y // 2)[:, None], (cx - size_x // 2)[:, None]
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= top) & (rows < top + size_y)  # (n, h)
    in_cols = (cols >= left) & (cols < left + size_x)  # (n, w)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (n, h, w)
    return x * keep[:, None].to(x.dtype)


def _flip(x: Tensor, n: int, p: DSAParams, gen: torch.Generator | None) -> Tensor:
    """Mirror left-right with probability prob_flip."""
    flip = (_uniform(n, 0.0, 1.0, gen, x) < p.prob_flip)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)


# --- colour: brightness, saturation and contrast, applied together ------------------------------


def _color(x: Tensor, n: int, p: DSAParams, gen: torch.Generator | None) -> Tensor:
    """Jitter brightness, then saturation, then contrast (the reference's 'color' family)."""
    b = _uniform(n, 0.0, 1.0, gen, x)[:, None, None, None]
    x = x + (b - 0.5) * p.brightness
    s = _uniform(n, 0.0, 1.0, gen, x)[:, None, None, None]
    mean = x.mean(dim=1, keepdim=True)  # per pixel over channels: a no-op for grey images
    x = (x - mean) * (s * p.saturation) + mean
    c = _uniform(n, 0.0, 1.0, gen, x)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (c + p.contrast) + mean


_Transform = Callable[[Tensor, int, DSAParams, "torch.Generator | None"], Tensor]
_TRANSFORMS: dict[str, _Transform] = {
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _scale,
    "rotate": _rotate,
}


def _parse(strategy: str) -> tuple[str, ...]:
    """Split 'color_crop_...' into families; 'none' or '' means no augmentation."""
    text = strategy.strip().lower()
    if text in ("", "none"):
        return ()
    families = tuple(text.split("_"))
    for family in families:
        if family not in _TRANSFORMS:
            raise suggest(family, _TRANSFORMS, "DSA augmentation family")
    if len(set(families)) != len(families):
        raise DDSearchError(f"DSA strategy {strategy!r} names a family twice")
    return families


class DSA:
    """Differentiable Siamese Augmentation with one transform family per call.

    ``dsa(x, seed=s)`` (Siamese mode): the family and its parameters come from ``s`` alone and are
    shared by every image, so the real and the synthetic batch get the same transform.
    ``dsa(x, generator=g)`` (per-image mode, for evaluation training): one family per call, but
    each image gets its own parameters drawn from ``g`` (a CPU generator). Without a generator the
    draws come from torch's global CPU RNG, so ``torch.manual_seed`` makes them reproducible.
    """

    def __init__(self, strategy: str, params: DSAParams = DSAParams()) -> None:
        self.families: tuple[str, ...] = _parse(strategy)
        self.strategy: str = "_".join(self.families) or "none"
        self.params = params

    def __call__(
        self, x: Tensor, seed: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Augment a batch x of shape (N, C, H, W); differentiable with respect to x."""
        if x.dim() != 4:
            raise ValueError(f"DSA expects images of shape (N, C, H, W), got {tuple(x.shape)}")
        if not self.families:
            return x
        if seed is not None:
            if generator is not None:
                raise ValueError("give DSA either seed (Siamese) or generator (per-image), not both")
            gen: torch.Generator | None = torch.Generator().manual_seed(seed)
            n = 1  # one parameter set, broadcast over the batch
        else:
            gen = generator
            n = x.shape[0]
        # A CPU tensor, so .item() does not wait for the accelerator.
        pick = int(torch.randint(len(self.families), (1,), generator=gen).item())
        return _TRANSFORMS[self.families[pick]](x, n, self.params, gen).contiguous()

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, params={self.params!r})"
