"""Fully connected network (e.g. LeNet-300-100 with hidden=(300, 100))."""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.layers import LayerFactory


class MLP(nn.Module):
    """flatten -> [linear -> ReLU] per hidden size -> linear to classes.

    Linears ask for a bias by default (as LeNet-300-100 has); a supermask factory may refuse
    it. Conv-n reuses this as its classifier head, without biases.
    """

    def __init__(self, layers: LayerFactory, in_features: int, hidden: tuple[int, ...],
                 num_classes: int, *, bias: bool = True) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            blocks += [layers.linear(width, h, bias=bias), nn.ReLU(inplace=True)]
            width = h
        blocks.append(layers.linear(width, num_classes, bias=bias))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
