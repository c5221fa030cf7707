"""DC-style ResNet18 (CIFAR stem): ResNet18 (instance norm), ResNet18BN, ResNet18BN_AP.

A 3x3 stride-1 stem, BasicBlocks of 64-128-256-512 channels with strides 1, 2, 2, 2, then a
global average pool and one Linear, so any input size from 8 px up works (below 16 px the
last stages keep stride 1, see ResNet18). The `_AP` variant
downsamples with conv(stride 1) + avgpool(2) instead of a strided conv, as in DC (DC's ResNet_AP
flattens a 4x4 map instead of pooling globally; here every ResNet pools globally).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddsearch.models.layers import as_hw, make_norm


def _norm(norm: str, channels: int) -> nn.Module:
    return make_norm(norm, channels, (0, 0))  # only batchnorm / instancenorm: no spatial size needed


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; `avgpool=True` downsamples by pooling (DC's _AP)."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avgpool: bool) -> None:
        super().__init__()
        self.pool_stride = stride if avgpool else 1
        conv_stride = 1 if avgpool else stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            layers: list[nn.Module] = [nn.Conv2d(in_planes, planes, kernel_size=1, stride=conv_stride, bias=False)]
            if self.pool_stride != 1:
                layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
            layers.append(_norm(norm, planes))
            self.shortcut = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.pool_stride != 1:
            out = F.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))  # not `+=`: no in-place ops (autograd through vmap)


class ResNet18(nn.Module):
    """DC's ResNet18; `norm` is 'instancenorm' (GroupNorm(C, C)) or 'batchnorm'."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        norm: str = "instancenorm",
        avgpool_downsample: bool = False,
    ) -> None:
        super().__init__()
        # Global pooling makes the head independent of the input size. A stage keeps stride 1
        # when downsampling would leave < 2 px (only below 16 px inputs, e.g. 8 px digits):
        # instance norm of a 1x1 map is a constant, which would cut the input off.
        side = min(as_hw(image_size))
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(norm, 64)
        stages = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stride = stride if side // stride >= 2 else 1
            side //= stride
            stages.append(
                nn.Sequential(
                    BasicBlock(in_planes, planes, stride, norm, avgpool_downsample),
                    BasicBlock(planes, planes, 1, norm, avgpool_downsample),
                )
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
