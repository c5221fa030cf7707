"""A network's parameters as one flat vector, in module (layer) order.

Expert snapshots, the unrolled student and the parameter selection all use this one layout:
``named_parameters()`` order, each tensor flattened and concatenated. For the ConvNet family that
is first conv, first norm, ..., classifier: shallow to deep.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class ParamLayout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, module: nn.Module) -> "ParamLayout":
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def total(self) -> int:
        return sum(self.numels)

    def to_json(self) -> str:
        return json.dumps([[n, list(s)] for n, s in zip(self.names, self.shapes)])

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """The module's parameters as one detached flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` shaped as the named parameters (gradients flow back into ``flat``)."""
        pieces = torch.split(flat, self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes)}


def kept_from(total: int, alpha: float) -> int:
    """First kept index of the flat vector: alpha drops the shallowest ``floor(alpha * total)`` entries."""
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    return int(math.floor(alpha * total))


def selection_mask(layout: ParamLayout, alpha: float) -> torch.Tensor:
    """Boolean mask over the flat vector: True for parameters the matching loss keeps."""
    mask = torch.ones(layout.total, dtype=torch.bool)
    mask[: kept_from(layout.total, alpha)] = False
    return mask


def forward_flat(
    module: nn.Module, layout: ParamLayout, flat: torch.Tensor, x: torch.Tensor, buffers: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``module(x)`` with the parameters taken from ``flat`` (and the given buffers)."""
    return functional_call(module, {**layout.unflatten(flat), **buffers}, (x,))
