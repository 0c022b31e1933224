"""The small networks of the DST paper's Table 2 (fantastic-weights-dst.txt, Appendix A.1).

- small-MLP (tabular Higgs): Linear(24, 256), ReLU, Linear(256, 256), ReLU, Linear(256, 1);
  72,449 parameters. Built with `mlp.MLP` and hidden sizes SMALL_MLP_HIDDEN. The input width
  comes from the dataset. Difference: the paper's single output is a logit for a sigmoid
  loss (its code, models/mlp_higgs.py, output_dim=1); our engine trains with softmax
  cross-entropy, so the head has one output per class (2 for Higgs: 72,706 parameters).
- large-MLP (CIFAR-10): Linear(3072, 1024), ReLU, Linear(1024, 512), ReLU, Linear(512, 10);
  3,676,682 parameters. `mlp.MLP` with LARGE_MLP_HIDDEN.
- small-CNN (CIFAR-10): three 3x3 stride-1 convs to 32/64/128 channels with ReLU, 2x2
  max-pools after the first two, global average pool, Linear(128, 10); 94,538 parameters.
  Padding: Table 2 writes Conv2d(c_in, c_out, 3, 1) and the paper's code
  (models/conv_cifar10.py, SmallConvNet_CIFAR10) uses no padding (32 -> 30 -> 15 -> 13 -> 6
  -> 4), while the text of A.1 says "padding 1"; we follow the table and the code. The count
  is the same either way; the smallest input is 18px (1x1 after the third conv).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models.layers import LayerFactory

SMALL_MLP_HIDDEN: tuple[int, ...] = (256, 256)
LARGE_MLP_HIDDEN: tuple[int, ...] = (1024, 512)
SMALL_CNN_WIDTHS: tuple[int, ...] = (32, 64, 128)


def small_cnn_feature_side(image_size: int, convs: int) -> int:
    """Side after `convs` valid 3x3 convs with a 2x2 pool between consecutive ones."""
    side = image_size - 2
    for _ in range(convs - 1):
        side = side // 2 - 2
    return side


class SmallCNN(nn.Module):
    """[conv3x3 (no padding) -> ReLU -> max-pool] ..., last conv -> ReLU -> avg pool -> linear."""

    def __init__(self, layers: LayerFactory, in_channels: int, image_size: int,
                 widths: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if small_cnn_feature_side(image_size, len(widths)) < 1:
            raise ValueError(f"the small CNN with {len(widths)} convs needs larger images "
                             f"than {image_size}px")
        self.convs = nn.ModuleList()
        c_in = in_channels
        for w in widths:
            self.convs.append(layers.conv(c_in, w, 3, bias=True))
            c_in = w
        self.fc = layers.linear(c_in, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            if i:
                x = F.max_pool2d(x, 2)
            x = F.relu(conv(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
