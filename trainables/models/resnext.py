"""ResNeXt-29 for CIFAR (Xie et al. 2017), as in kuangliu/pytorch-cifar models/resnext.py.

The strong-lottery paper's "ResNext(32x4d)" (soft-iep.txt §5, soft-iep-appendix.txt C.2.3).
From the reference: a 1x1 stem conv to 64 channels + BN + ReLU; three stages of three
bottleneck blocks, strides 1/2/2; a block is 1x1 conv to C·d channels, grouped 3x3 conv
(C groups, the stride sits here), 1x1 conv to 2·C·d (expansion 2), each followed by BN,
ReLU after the first two and after the residual sum; a 1x1 conv-BN projection where the
shape changes; d doubles after every stage (4, 8, 16 for 32x4d), so the stages end with
256/512/1024 channels; average pool, linear head. No conv biases.

Difference: the reference pools with a fixed 8x8 window (32px inputs only); we pool
globally, which is the same at 32px and also takes smaller or larger inputs.
Module names follow the reference (conv1, bn1, layer1-3, linear), so its state dicts load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models.layers import LayerFactory

EXPANSION = 2
# ResNeXt29_32x4d of the reference: stem width, cardinality C, d per stage, blocks per stage.
RESNEXT29_STEM = 64
RESNEXT29_CARDINALITY = 32
RESNEXT29_WIDTHS: tuple[int, ...] = (4, 8, 16)
RESNEXT29_BLOCKS: tuple[int, ...] = (3, 3, 3)


class ResNeXtBlock(nn.Module):
    """1x1 -> grouped 3x3 -> 1x1 (x2 channels), each with BN, plus the shortcut."""

    def __init__(self, layers: LayerFactory, in_channels: int, cardinality: int,
                 bottleneck_width: int, stride: int) -> None:
        super().__init__()
        group_width = cardinality * bottleneck_width
        out_channels = EXPANSION * group_width
        self.conv1 = layers.conv(in_channels, group_width, 1, bias=False)
        self.bn1 = layers.norm(group_width)
        self.conv2 = layers.conv(group_width, group_width, 3, stride=stride, padding=1,
                                 groups=cardinality, bias=False)
        self.bn2 = layers.norm(group_width)
        self.conv3 = layers.conv(group_width, out_channels, 1, bias=False)
        self.bn3 = layers.norm(out_channels)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                layers.conv(in_channels, out_channels, 1, stride=stride, bias=False),
                layers.norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNeXt(nn.Module):
    """CIFAR ResNeXt: `bottleneck_widths` gives d per stage (4, 8, 16 for 32x4d)."""

    def __init__(self, layers: LayerFactory, in_channels: int, stem_width: int, cardinality: int,
                 bottleneck_widths: tuple[int, ...], blocks: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        if len(bottleneck_widths) != len(blocks):
            raise ValueError(f"{len(blocks)} stages need {len(blocks)} bottleneck widths, "
                             f"got {list(bottleneck_widths)}")
        self.conv1 = layers.conv(in_channels, stem_width, 1, bias=False)
        self.bn1 = layers.norm(stem_width)
        c_in = stem_width
        for s, (width, n) in enumerate(zip(bottleneck_widths, blocks, strict=True)):
            stage = []
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                stage.append(ResNeXtBlock(layers, c_in, cardinality, width, stride))
                c_in = EXPANSION * cardinality * width
            self.add_module(f"layer{s + 1}", nn.Sequential(*stage))
        self.num_stages = len(blocks)
        self.linear = layers.linear(c_in, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for s in range(self.num_stages):
            out = getattr(self, f"layer{s + 1}")(out)
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(torch.flatten(out, 1))
