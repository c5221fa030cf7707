"""Candidate spaces: the 22 named ConvNets, the DC paper's 720-architecture grid, explicit lists.

A space is a list of architecture names that :func:`ddsearch.models.get_network` understands.
Names are checked here (a typo is the user's error and fails the command); whether a known
name can run at the data's image size is checked later, per candidate, by :func:`split_runnable`.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from ddsearch.errors import DDSearchError
from ddsearch.models import convnet_name, get_network, is_conv_family

# The 22 ConvNet variants that Dataset Condensation searched (Zhao et al., ICLR 2021, Table 6).
SEED22: tuple[str, ...] = (
    "ConvNetD1", "ConvNetD2", "ConvNetD3", "ConvNetD4", "ConvNetD5",
    "ConvNetW32", "ConvNetW64", "ConvNetW128", "ConvNetW256",
    "ConvNetAS", "ConvNetAR", "ConvNetAL", "ConvNetASwish", "ConvNetASwishBN",
    "ConvNetNN", "ConvNetBN", "ConvNetLN", "ConvNetIN", "ConvNetGN",
    "ConvNetNP", "ConvNetMP", "ConvNetAP",
)

# The axes of DC's NAS experiment: 4 * 4 * 3 * 5 * 3 = 720 ConvNets.
GRID_AXES: dict[str, tuple] = {
    "depth": (1, 2, 3, 4),
    "width": (32, 64, 128, 256),
    "act": ("sigmoid", "relu", "leakyrelu"),
    "norm": ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm"),
    "pool": ("none", "maxpool", "avgpool"),
}
NAMED_SPACES = ("seed22", "grid")


def grid_space(k: int | None = None, seed: int = 0) -> list[str]:
    """The grid in a fixed order, or ``k`` of it drawn without replacement (same seed, same draw)."""
    names = [convnet_name(*combo) for combo in itertools.product(*GRID_AXES.values())]
    if k is None or k <= 0 or k >= len(names):
        return names
    return random.Random(seed).sample(names, k)


def resolve_space(spec: str, k: int | None = None, seed: int = 0) -> list[str]:
    """``seed22``, ``grid`` (``k`` random members, 0/None for all 720) or ``A,B,C``.

    Raises DDSearchError for an empty list, a duplicate or an unknown name (with close matches).
    """
    spec = spec.strip()
    if k is not None and k < 0:
        raise DDSearchError(f"--k must be 0 (the whole grid) or a positive count, got {k}")
    if spec == "seed22":
        names = list(SEED22)
    elif spec == "grid":
        names = grid_space(k, seed)
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names:
            raise DDSearchError(f"empty candidate space {spec!r}; use seed22, grid or a comma-separated list of architectures")
        if spec.lower() in NAMED_SPACES:
            raise DDSearchError(f"unknown space {spec!r}; did you mean {spec.lower()!r}?")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise DDSearchError(f"architecture {name!r} is listed twice in the candidate space")
            seen.add(name)
            try:
                is_conv_family(name)  # raises for unknown names, with suggestions
            except DDSearchError as err:
                raise DDSearchError(f"{err} (candidate spaces: seed22, grid, or a comma-separated list)") from None
    return names


@dataclass(frozen=True)
class Skipped:
    """A candidate left out of the search, and why."""

    arch: str
    reason: str


def split_runnable(names: list[str], channels: int, num_classes: int, image_size: tuple[int, int]) -> tuple[list[str], list[Skipped]]:
    """Candidates that build for this data, and the others with the builder's reason.

    A ConvNet too deep for the image size raises DDSearchError in ``get_network``; that becomes a
    :class:`Skipped` entry instead of failing the whole search.
    """
    runnable: list[str] = []
    skipped: list[Skipped] = []
    for name in names:
        try:
            get_network(name, channels, num_classes, image_size)
        except DDSearchError as err:
            skipped.append(Skipped(name, str(err)))
        else:
            runnable.append(name)
    return runnable, skipped
