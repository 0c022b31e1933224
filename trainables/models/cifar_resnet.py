"""The CIFAR ResNet family ResNet-20/32/44/56/110 (He et al. 2016, §4.2).

A 3x3 stem conv with 16 channels, three stages of n BasicBlocks with 16/32/64 channels
(stages 2 and 3 halve the resolution), global average pool, linear head; depth = 6n + 2.
The blocks are the ones of `resnet.py` (two 3x3 conv-BN, identity shortcut; a 1x1 conv-BN
projection where the shape changes), so this is `resnet.ResNet` with CIFAR widths.

Shortcuts: He et al. use zero-padded identity shortcuts (option A) on CIFAR; the DST paper's
code (alooow/fantastic_weights_paper models/cifar_resnet.py, the open_lth model) projects
with a 1x1 conv + BN (option B). We follow the paper's own count: fantastic-weights-dst.txt
Appendix A, Table 2 gives ResNet-56 855,770 parameters, which is option B at 10 classes
(option A would give 853,018).
"""

from __future__ import annotations

from trainables.models.layers import LayerFactory
from trainables.models.resnet import ResNet

CIFAR_RESNET_WIDTHS: tuple[int, ...] = (16, 32, 64)
CIFAR_RESNET_DEPTHS: tuple[int, ...] = (20, 32, 44, 56, 110)


def blocks_per_stage(depth: int) -> int:
    """n of depth = 6n + 2 (two convs per block, three stages, plus stem and head)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
    return (depth - 2) // 6


def cifar_resnet(layers: LayerFactory, in_channels: int, depth: int, widths: tuple[int, ...],
                 num_classes: int) -> ResNet:
    """ResNet-`depth` with stage widths `widths` (CIFAR_RESNET_WIDTHS, or a multiple of them)."""
    n = blocks_per_stage(depth)
    return ResNet(layers, in_channels, widths, (n,) * len(widths), num_classes)
