"""LeNet-5-Caffe, the DST paper's FashionMNIST model (fantastic-weights-dst.txt A.1, [34]).

From the paper's code (alooow/fantastic_weights_paper models/lenet.py, after Lee et al.'s
SNIP code): conv 5x5 to 20 channels (no padding), ReLU, 2x2 max-pool; conv 5x5 to 50, ReLU,
2x2 max-pool; linear 50·4·4 -> 500, ReLU; linear 500 -> classes. Convs and linears carry
biases. Caffe's variant, not LeCun's: the first conv has no padding, so 28px inputs reach
4x4 (431,080 parameters at 10 classes). The first linear's width follows the input size
here instead of being fixed at 28px; the smallest input is 16px (1x1 after the second pool).
Module names follow the reference (conv1, conv2, fc3, fc4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models.layers import LayerFactory

LENET_CONV_WIDTHS: tuple[int, int] = (20, 50)
LENET_HIDDEN = 500


def feature_side(image_size: int) -> int:
    """Side of the last feature map: two (5x5 valid conv, 2x2 pool) steps."""
    return ((image_size - 4) // 2 - 4) // 2


class LeNet5Caffe(nn.Module):
    """conv5-pool-conv5-pool-fc-fc with ReLUs."""

    def __init__(self, layers: LayerFactory, in_channels: int, image_size: int,
                 widths: tuple[int, int], hidden: int, num_classes: int) -> None:
        super().__init__()
        side = feature_side(image_size)
        if side < 1:
            raise ValueError(f"LeNet-5-Caffe needs images of at least 16px, got {image_size}px")
        self.conv1 = layers.conv(in_channels, widths[0], 5, bias=True)
        self.conv2 = layers.conv(widths[0], widths[1], 5, bias=True)
        self.fc3 = layers.linear(widths[1] * side * side, hidden, bias=True)
        self.fc4 = layers.linear(hidden, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc3(torch.flatten(x, 1)))
        return self.fc4(x)
