"""Networks by name (like timm's `create_model`): one dict from name to factory, errors that suggest.

Names follow Dataset Condensation (ConvNet, ConvNetD4, ConvNetBN, ResNet18BN_AP, ...). The
ConvNet family can also be spelled generically, `ConvNet-d{depth}-w{width}-{act}-{norm}-{pool}`,
for search spaces too large to name one by one (see `convnet_name`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from ddsearch.errors import suggest
from ddsearch.models.classic import MLP, VGG11, AlexNet, LeNet
from ddsearch.models.convnet import CONVNET_ALIASES, CONVNET_DEFAULTS, ConvNet, parse_convnet_name
from ddsearch.models.layers import as_hw
from ddsearch.models.resnet import ResNet18

# factory(channels, num_classes, image_size) -> module
Factory = Callable[[int, int, tuple[int, int]], nn.Module]

_REGISTRY: dict[str, Factory] = {
    **{name: partial(ConvNet, **{**CONVNET_DEFAULTS, **kw}, name=name) for name, kw in CONVNET_ALIASES.items()},
    "MLP": MLP,
    "LeNet": LeNet,
    "AlexNet": AlexNet,
    "AlexNetBN": partial(AlexNet, norm="batchnorm"),
    "VGG11": VGG11,
    "VGG11BN": partial(VGG11, norm="batchnorm"),
    "ResNet18": ResNet18,
    "ResNet18BN": partial(ResNet18, norm="batchnorm"),
    "ResNet18BN_AP": partial(ResNet18, norm="batchnorm", avgpool_downsample=True),
}


def list_models() -> list[str]:
    """All fixed model names (the generic ConvNet spelling is accepted on top of these)."""
    return list(_REGISTRY)


def is_conv_family(name: str) -> bool:
    """True if `name` builds a ConvNet, i.e. a model with `forward_features` (needed by DataDAM)."""
    if name in CONVNET_ALIASES or parse_convnet_name(name) is not None:
        return True
    if name in _REGISTRY:
        return False
    raise suggest(name, list_models(), "architecture")


def get_network(name: str, channels: int, num_classes: int, image_size: int | tuple[int, int]) -> nn.Module:
    """Build the network `name` for images of shape [channels, *image_size].

    Raises DDSearchError for unknown names (with close matches) and for ConvNets too deep for
    the image size.
    """
    hw = as_hw(image_size)
    generic = parse_convnet_name(name)
    if generic is not None:
        return ConvNet(channels, num_classes, hw, name=name, **generic)  # type: ignore[arg-type]
    if name not in _REGISTRY:
        raise suggest(name, list_models(), "architecture")
    return _REGISTRY[name](channels, num_classes, hw)


def seeded_network(
    name: str, channels: int, num_classes: int, image_size: int | tuple[int, int], seed: int
) -> nn.Module:
    """`get_network` whose initial weights depend on ``seed`` only; torch's global RNG is left alone."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_network(name, channels, num_classes, image_size)
