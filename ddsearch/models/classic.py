"""Classic evaluator networks of Dataset Condensation: MLP, LeNet, AlexNet(BN), VGG11(BN).

They follow DC's layer widths, but unlike DC they work at any input size from 8 px up:
classifier input sizes are measured from the real layer shapes (a dry forward on the meta
device), and a fixed 2x2 pooling is skipped when the feature map is already smaller than 2 px
(decided once, at construction), so small images are not pooled to nothing. VGG also skips a
pool that would leave a 1x1 map for further convs, since instance norm maps a 1x1 map to a constant
(at 28 px and up this never triggers, so the shapes there are DC's). The first conv
pads 28 px images as DC pads MNIST, so 28 px inputs give the same shapes as in DC.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ddsearch.models.layers import as_hw, first_conv_padding, make_norm, out_shape


def _append_pool(layers: list[nn.Module], in_shape: tuple[int, int, int], keep_2px: bool = False) -> None:
    """Append MaxPool2d(2, 2) unless the current feature map is already < 2 px on a side.

    With `keep_2px` the pool is also skipped if it would leave < 2 px: used where normalised
    convs follow, because instance norm of a 1x1 map is a constant (the input would be lost).
    """
    _, h, w = out_shape(nn.Sequential(*layers), in_shape)
    if min(h, w) >= (4 if keep_2px else 2):
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))


def _conv5_padding(hw: tuple[int, int], base: tuple[int, int]) -> tuple[int, int]:
    """Padding for a 5x5 conv: `base`, raised to 2 ('same') where the input is too small for the kernel."""
    return tuple(p if s + 2 * p >= 5 else 2 for s, p in zip(hw, base))  # type: ignore[return-value]


class MLP(nn.Module):
    """flatten -> 128 -> 128 -> classes with ReLU; the input size comes from the image size."""

    def __init__(self, channels: int, num_classes: int, image_size: int | tuple[int, int]) -> None:
        super().__init__()
        h, w = as_hw(image_size)
        self.fc_1 = nn.Linear(channels * h * w, 128)
        self.fc_2 = nn.Linear(128, 128)
        self.fc_3 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.fc_1(x.flatten(1)))
        out = F.relu(self.fc_2(out))
        return self.fc_3(out)


class LeNet(nn.Module):
    """conv 6@5x5 -> maxpool -> conv 16@5x5 -> maxpool -> fc 120 -> 84 -> classes.

    28 px inputs get padding 2 (as DC does for MNIST); any 5x5 conv whose input is smaller
    than the kernel gets padding 2, and pools are skipped below 2 px, so 8 px inputs work.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int | tuple[int, int]) -> None:
        super().__init__()
        hw = as_hw(image_size)
        in_shape = (channels, *hw)
        layers: list[nn.Module] = [nn.Conv2d(channels, 6, kernel_size=5, padding=_conv5_padding(hw, first_conv_padding(hw, 0, 2)))]
        layers.append(nn.ReLU())
        _append_pool(layers, in_shape)
        _, h, w = out_shape(nn.Sequential(*layers), in_shape)
        layers += [nn.Conv2d(6, 16, kernel_size=5, padding=_conv5_padding((h, w), (0, 0))), nn.ReLU()]
        _append_pool(layers, in_shape)
        self.features = nn.Sequential(*layers)
        self.fc_1 = nn.Linear(math.prod(out_shape(self.features, in_shape)), 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x).flatten(1)
        out = F.relu(self.fc_1(out))
        out = F.relu(self.fc_2(out))
        return self.fc_3(out)


class AlexNet(nn.Module):
    """DC's small AlexNet: convs 128@5x5, 192@5x5, 256, 192, 192 @3x3, three maxpools, one Linear.

    `norm='batchnorm'` gives AlexNetBN (BatchNorm after every conv).
    """

    def __init__(self, channels: int, num_classes: int, image_size: int | tuple[int, int], norm: str = "none") -> None:
        super().__init__()
        hw = as_hw(image_size)
        in_shape = (channels, *hw)
        # (out channels, kernel size, padding, pool after); the first conv pads 28 px up to 32 as DC does.
        spec = [
            (128, 5, first_conv_padding(hw, 2, 2), True),
            (192, 5, 2, True),
            (256, 3, 1, False),
            (192, 3, 1, False),
            (192, 3, 1, True),
        ]
        layers: list[nn.Module] = []
        in_ch = channels
        for out_ch, k, pad, pool in spec:
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=k, padding=pad), make_norm(norm, out_ch, (0, 0)), nn.ReLU()]
            if pool:
                _append_pool(layers, in_shape)
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(math.prod(out_shape(self.features, in_shape)), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


VGG11_CFG: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG11(nn.Module):
    """DC's VGG11: conv3x3 -> norm -> ReLU blocks with maxpools ('M'), then one Linear.

    DC's default norm is instance norm (GroupNorm(C, C)); `norm='batchnorm'` gives VGG11BN.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int | tuple[int, int], norm: str = "instancenorm") -> None:
        super().__init__()
        hw = as_hw(image_size)
        in_shape = (channels, *hw)
        layers: list[nn.Module] = []
        in_ch = channels
        for i, item in enumerate(VGG11_CFG):
            if item == "M":
                _append_pool(layers, in_shape, keep_2px=i < len(VGG11_CFG) - 1)
                continue
            assert isinstance(item, int)
            pad = first_conv_padding(hw, 1, 2) if not layers else 1
            layers += [nn.Conv2d(in_ch, item, kernel_size=3, padding=pad), make_norm(norm, item, (0, 0)), nn.ReLU()]
            in_ch = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(math.prod(out_shape(self.features, in_shape)), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
