"""ConvMixer-h/d (Trockman & Kolter, "Patches Are All You Need?", 2022) for CIFAR.

The strong-lottery paper's "ConvMixer(256x8)" (soft-iep.txt §5, soft-iep-appendix.txt C.2.3):
hidden dim h = 256, depth d = 8. The CIFAR-10 settings come from the authors' CIFAR code,
locuslab/convmixer-cifar10 (train.py defaults `--psize 2 --conv-ks 5`; its README: "trains a
ConvMixer-256/8 with kernel size 5 and patch size 2"):

- patch embedding: conv with kernel = stride = patch size p (2), then GELU, BatchNorm;
- d blocks of: residual(depthwise k x k conv (groups = h, k = 5, "same" padding), GELU, BN),
  then a pointwise 1x1 conv, GELU, BN;
- global average pool, flatten, linear head.

Every conv and the head carry a bias in the reference (PyTorch's default); a factory that
refuses biases (supermask) drops them. The nesting below is the reference's
(`nn.Sequential` with a `Residual(fn)` wrapper), so its state dicts load by name.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.layers import LayerFactory

CONVMIXER_DIM = 256
CONVMIXER_DEPTH = 8
CONVMIXER_KERNEL = 5
CONVMIXER_PATCH = 2


class Residual(nn.Module):
    """fn(x) + x (the reference's name and attribute, for state-dict compatibility)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


def conv_mixer(layers: LayerFactory, in_channels: int, dim: int, depth: int, kernel_size: int,
               patch_size: int, num_classes: int) -> nn.Sequential:
    """ConvMixer-dim/depth; `kernel_size` must be odd so that "same" padding is symmetric."""
    if kernel_size % 2 == 0:
        raise ValueError(f"ConvMixer needs an odd kernel size for 'same' padding, got {kernel_size}")

    def block() -> nn.Sequential:
        depthwise = layers.conv(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=True)
        return nn.Sequential(
            Residual(nn.Sequential(depthwise, nn.GELU(), layers.norm(dim))),
            layers.conv(dim, dim, 1, bias=True), nn.GELU(), layers.norm(dim))

    return nn.Sequential(
        layers.conv(in_channels, dim, patch_size, stride=patch_size, bias=True), nn.GELU(),
        layers.norm(dim),
        *[block() for _ in range(depth)],
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
        layers.linear(dim, num_classes, bias=True))
