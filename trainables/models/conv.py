"""Conv-2/4/6/8 of Frankle & Carbin (2019) as used by Ramanujan et al. (hidden-networks).

Pairs of 3x3 convs (padding 1, ReLU) each followed by a 2x2 max-pool, then a fully
connected head 256 -> 256 -> classes. No BatchNorm and no biases anywhere, as in the
hidden-networks cConv models (their supermask layers carry no bias); hidden-networks writes
the head as 1x1 convs on the flattened features, which is the same map as a linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.layers import LayerFactory
from trainables.models.mlp import MLP

# Channel widths of the convs, two per pool; Conv-n uses the first n.
CONV_CHANNELS: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 512, 512)
HEAD_HIDDEN: tuple[int, ...] = (256, 256)


class ConvNet(nn.Module):
    """Conv-n: `channels` lists every conv's output width (an even number of them)."""

    def __init__(self, layers: LayerFactory, in_channels: int, image_size: int,
                 channels: tuple[int, ...], hidden: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if not channels or len(channels) % 2:
            raise ValueError(f"Conv-n needs an even, non-zero number of convs, got {len(channels)}")
        feats: list[nn.Module] = []
        c_in, side = in_channels, image_size
        for i, c_out in enumerate(channels):
            feats += [layers.conv(c_in, c_out, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
            c_in = c_out
            if i % 2 == 1:
                feats.append(nn.MaxPool2d(2))
                side //= 2
        if side < 1:
            raise ValueError(f"{image_size}px images are too small for {len(channels) // 2} pools")
        self.features = nn.Sequential(*feats)
        self.classifier = MLP(layers, c_in * side * side, hidden, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
