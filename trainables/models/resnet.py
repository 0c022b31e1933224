"""CIFAR ResNet-18 (He et al. 2016, the CIFAR variant of kuangliu / open_lth / hidden-networks).

3x3 stem conv with stride 1 and no max-pool (so 32px inputs keep resolution; 8px inputs
still end at 1x1), four stages of two BasicBlocks, global average pool, linear head.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.layers import LayerFactory

STAGE_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
STAGE_BLOCKS: tuple[int, ...] = (2, 2, 2, 2)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity, or conv1x1-BN when the shape changes."""

    def __init__(self, layers: LayerFactory, in_channels: int, out_channels: int,
                 stride: int) -> None:
        super().__init__()
        self.conv1 = layers.conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = layers.norm(out_channels)
        self.conv2 = layers.conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = layers.norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                layers.conv(in_channels, out_channels, 1, stride=stride, bias=False),
                layers.norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet with BasicBlocks; stage s > 0 halves the resolution."""

    def __init__(self, layers: LayerFactory, in_channels: int, widths: tuple[int, ...],
                 blocks: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            layers.conv(in_channels, widths[0], 3, padding=1, bias=False),
            layers.norm(widths[0]), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        c_in = widths[0]
        for s, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            stage = []
            for b in range(n):
                stage.append(BasicBlock(layers, c_in, width, 2 if s > 0 and b == 0 else 1))
                c_in = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = layers.linear(c_in, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(out, 1))
