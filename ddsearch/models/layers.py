"""Small building blocks shared by the networks: norms, activations, shape arithmetic.

Everything here is stateless between calls (no in-place ops, no hooks), so the models built from
it work with `torch.func.functional_call` and `stack_module_state` + `vmap`.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.func import functional_call

from ddsearch.errors import DDSearchError, suggest

ACTIVATIONS = ("sigmoid", "relu", "leakyrelu", "swish")
NORMS = ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm")
POOLS = ("none", "maxpool", "avgpool")


def as_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Normalise an image size given as `32` or `(32, 32)` to `(height, width)`."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = (int(s) for s in image_size)
    return h, w


def make_act(act: str) -> nn.Module:
    """Activation by name; never in-place, so block outputs can be kept (DataDAM) and vmapped."""
    if act == "sigmoid":
        return nn.Sigmoid()
    if act == "relu":
        return nn.ReLU()
    if act == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    if act == "swish":
        return nn.SiLU()
    raise suggest(act, ACTIVATIONS, "activation")


def make_norm(norm: str, channels: int, hw: tuple[int, int]) -> nn.Module:
    """Normalisation layer as in Dataset Condensation.

    'instancenorm' is GroupNorm(C, C) (one group per channel, affine), which is what DC calls
    instance norm; 'layernorm' normalises over [C, H, W], so it needs the spatial size `hw`.
    """
    if norm == "none":
        return nn.Identity()
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels, affine=True)
    if norm == "layernorm":
        return nn.LayerNorm([channels, *hw], elementwise_affine=True)
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "groupnorm":
        if channels % 4:
            raise DDSearchError(f"groupnorm uses 4 groups, so the width must be a multiple of 4 (got {channels})")
        return nn.GroupNorm(4, channels, affine=True)
    raise suggest(norm, NORMS, "norm")


def first_conv_padding(hw: tuple[int, int], base: int, extra: int) -> tuple[int, int]:
    """Padding of the first conv: DC pads MNIST's 28 px images by `extra` more so they act like 32 px."""
    return tuple(base + extra if s == 28 else base for s in hw)  # type: ignore[return-value]


def out_shape(module: nn.Module, in_shape: tuple[int, ...]) -> torch.Size:
    """Output shape of `module` for an input of shape `in_shape` (no batch dim).

    Runs a dry forward on the meta device: it checks the real shapes (no hand-written
    arithmetic to drift out of sync) and costs no FLOPs or memory, even at 224 px.
    """
    meta = {
        k: torch.empty_like(v, device="meta")
        for k, v in itertools.chain(module.named_parameters(), module.named_buffers())
    }
    with torch.no_grad():
        # Batch 2: norms in train mode refuse a batch of 1 when the map is 1x1.
        out = functional_call(module, meta, (torch.empty(2, *in_shape, device="meta"),))
    return out.shape[1:]
