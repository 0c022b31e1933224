"""Fully connected network (e.g. LeNet-300-100 with hidden=(300, 100))."""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.layers import LayerFactory


class MLP(nn.Module):
    """flatten -> [linear -> ReLU] per hidden size -> linear to classes.

    Linears ask for a bias (as LeNet-300-100 has); a supermask factory may refuse it.
    """

    def __init__(self, layers: LayerFactory, in_features: int, hidden: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            blocks += [layers.linear(width, h, bias=True), nn.ReLU(inplace=True)]
            width = h
        blocks.append(layers.linear(width, num_classes, bias=True))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
