"""VGG-16 with BatchNorm for CIFAR, as the DST paper uses it (fantastic-weights-dst.txt A.1).

The paper: "The VGG-16 model is modified to be used with CIFAR-10 and uses BatchNorm. The
implementation ... is adapted from [34]" (Liu et al. 2022, VITA-Group/Random_Pruning); the
paper's code, alooow/fantastic_weights_paper models/vgg.py (depth 16, batchnorm=True), gives:

- 13 3x3 convs (padding 1, no bias) of 64,64 | 128,128 | 256x3 | 512x3 | 512x3 channels, each
  followed by BatchNorm and ReLU, with a 2x2 max-pool after each of the first four groups
  (not after the last: 32px inputs reach 2x2);
- an average pool over what is left (the reference's AvgPool2d(2) on CIFAR, AvgPool2d(4) on
  64px Tiny-ImageNet: a global average pool in both cases, which is what we use);
- one linear layer 512 -> classes (no hidden fully connected layers).

Module names follow the reference (`feature`, `classifier`), so its state dicts load.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.layers import LayerFactory

# Conv widths; "M" is a 2x2 max-pool (the reference's defaultcfg[16]).
VGG16_PLAN: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                     512, 512, 512, "M", 512, 512, 512)


class VGG(nn.Module):
    """conv3x3-BN-ReLU stacks with max-pools as `plan` says, global average pool, linear."""

    def __init__(self, layers: LayerFactory, in_channels: int, plan: tuple[int | str, ...],
                 num_classes: int) -> None:
        super().__init__()
        feats: list[nn.Module] = []
        c_in = in_channels
        for v in plan:
            if v == "M":
                feats.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            assert isinstance(v, int)
            feats += [layers.conv(c_in, v, 3, padding=1, bias=False), layers.norm(v),
                      nn.ReLU(inplace=True)]
            c_in = v
        self.feature = nn.Sequential(*feats)
        self.classifier = layers.linear(c_in, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(self.feature(x), 1), 1)
        return self.classifier(out)


def scale_plan(plan: tuple[int | str, ...], width: float) -> tuple[int | str, ...]:
    """Conv widths times `width` (rounded, at least 1); pools unchanged."""
    return tuple(v if isinstance(v, str) else max(1, round(v * width)) for v in plan)
