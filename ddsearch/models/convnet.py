"""The ConvNet family of Dataset Condensation (Zhao et al.), the default distillation backbone.

A block is conv3x3(pad 1) -> norm -> act -> pool(2, 2); the classifier is one Linear on the
flattened output of the last block. `forward_features` returns each block's activation before
pooling, which DataDAM needs for its spatial attention, without forward hooks.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from ddsearch.errors import DDSearchError, suggest
from ddsearch.models.layers import ACTIVATIONS, NORMS, POOLS, as_hw, first_conv_padding, make_act, make_norm, out_shape

GENERIC_PATTERN = "ConvNet-d{depth}-w{width}-{act}-{norm}-{pool}"
_GENERIC_RE = re.compile(r"ConvNet-d(\d+)-w(\d+)-([a-z]+)-([a-z]+)-([a-z]+)")


def convnet_name(depth: int, width: int, act: str, norm: str, pool: str) -> str:
    """Generic name of a ConvNet, e.g. 'ConvNet-d4-w64-leakyrelu-batchnorm-maxpool'."""
    return GENERIC_PATTERN.format(depth=depth, width=width, act=act, norm=norm, pool=pool)


def parse_convnet_name(name: str) -> dict[str, int | str] | None:
    """ConvNet kwargs from a generic name; None if `name` is not in the generic spelling.

    Raises DDSearchError if it starts like one but a part is wrong, so typos are not silently
    reported as 'unknown architecture'.
    """
    if not name.startswith("ConvNet-"):
        return None
    m = _GENERIC_RE.fullmatch(name)
    if m is None:
        raise DDSearchError(f"bad ConvNet name {name!r}; expected {GENERIC_PATTERN}, e.g. {convnet_name(3, 128, 'relu', 'instancenorm', 'avgpool')}")
    depth, width, act, norm, pool = int(m[1]), int(m[2]), m[3], m[4], m[5]
    for part, choices, what in ((act, ACTIVATIONS, "activation"), (norm, NORMS, "norm"), (pool, POOLS, "pool")):
        if part not in choices:
            raise DDSearchError(f"in {name!r}: {suggest(part, choices, what)}")
    if depth < 1 or width < 1:
        raise DDSearchError(f"in {name!r}: depth and width must be at least 1")
    return {"depth": depth, "width": width, "act": act, "norm": norm, "pool": pool}


def max_depth(image_size: int | tuple[int, int], pool: str) -> int | None:
    """Deepest pooled ConvNet that keeps at least 1x1 features (None: any depth fits, no pooling)."""
    if pool == "none":
        return None
    h, w = as_hw(image_size)
    side = min(32 if h == 28 else h, 32 if w == 28 else w)  # 28 px is padded to 32 (see ConvNet)
    return int(math.floor(math.log2(side))) if side >= 1 else 0


class ConvNet(nn.Module):
    """DC's ConvNet: `depth` blocks of conv3x3 -> norm -> act -> pool(2, 2), then a Linear.

    As in DC, 28 px inputs get padding 3 in the first conv so they are processed like 32 px
    (DC keys this on 1 channel; here it is keyed on the size, so 3-channel 28 px images work too).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        width: int = 128,
        depth: int = 3,
        act: str = "relu",
        norm: str = "instancenorm",
        pool: str = "avgpool",
        name: str | None = None,
    ) -> None:
        super().__init__()
        name = name or convnet_name(depth, width, act, norm, pool)
        hw = as_hw(image_size)
        if pool not in POOLS:
            raise suggest(pool, POOLS, "pool")
        fits = max_depth(hw, pool)
        if fits is not None and depth > fits:
            raise DDSearchError(
                f"{name} is too deep for {hw[0]}x{hw[1]} images: each of its {depth} blocks halves the "
                f"feature map, so at most depth {fits} fits; use a shallower ConvNet, larger images or pool 'none'"
            )

        blocks = []
        in_ch = channels
        pad = first_conv_padding(hw, base=1, extra=2)
        h, w = hw[0] + 2 * (pad[0] - 1), hw[1] + 2 * (pad[1] - 1)  # 28 -> 32; layernorm needs the size
        for d in range(depth):
            conv = nn.Conv2d(in_ch, width, kernel_size=3, padding=pad if d == 0 else 1)
            blocks.append(nn.Sequential(conv, make_norm(norm, width, (h, w)), make_act(act)))
            in_ch = width
            if pool != "none":
                h, w = h // 2, w // 2
        self.blocks = nn.ModuleList(blocks)
        # Parameterless and shared by all blocks, so it adds no state.
        self.pool: nn.Module = {
            "none": nn.Identity(),
            "maxpool": nn.MaxPool2d(kernel_size=2, stride=2),
            "avgpool": nn.AvgPool2d(kernel_size=2, stride=2),
        }[pool]
        self.num_blocks = depth
        self.width = width
        pooled = (m for block in blocks for m in (block, self.pool))
        self.embed_dim = math.prod(out_shape(nn.Sequential(*pooled), (channels, *hw)))
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-block activations (after conv+norm+act, before pooling) and the final embedding [N, D]."""
        acts = []
        out = x
        for block in self.blocks:
            out = block(out)
            acts.append(out)
            out = self.pool(out)
        return acts, out.flatten(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened output of the last block (after pooling): the input of the classifier."""
        for block in self.blocks:
            x = self.pool(block(x))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# DC's named variants: each changes one setting of the default ConvNet.
CONVNET_DEFAULTS: dict[str, int | str] = {"width": 128, "depth": 3, "act": "relu", "norm": "instancenorm", "pool": "avgpool"}
CONVNET_ALIASES: dict[str, dict[str, int | str]] = {
    "ConvNet": {},
    **{f"ConvNetD{d}": {"depth": d} for d in range(1, 8)},
    **{f"ConvNetW{w}": {"width": w} for w in (32, 64, 128, 256)},
    "ConvNetAS": {"act": "sigmoid"},
    "ConvNetAR": {"act": "relu"},
    "ConvNetAL": {"act": "leakyrelu"},
    "ConvNetASwish": {"act": "swish"},
    "ConvNetASwishBN": {"act": "swish", "norm": "batchnorm"},
    "ConvNetNN": {"norm": "none"},
    "ConvNetBN": {"norm": "batchnorm"},
    "ConvNetLN": {"norm": "layernorm"},
    "ConvNetIN": {"norm": "instancenorm"},
    "ConvNetGN": {"norm": "groupnorm"},
    "ConvNetNP": {"pool": "none"},
    "ConvNetMP": {"pool": "maxpool"},
    "ConvNetAP": {"pool": "avgpool"},
}
