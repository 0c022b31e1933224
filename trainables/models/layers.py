"""How a model asks for its layers, so one architecture serves dense and supermasked runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn


class ConvFactory(Protocol):
    def __call__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 stride: int = 1, padding: int = 0, groups: int = 1,
                 bias: bool = False) -> nn.Module: ...


class LinearFactory(Protocol):
    def __call__(self, in_features: int, out_features: int, *, bias: bool = True) -> nn.Module: ...


class NormFactory(Protocol):
    def __call__(self, num_features: int) -> nn.Module: ...


@dataclass(frozen=True)
class LayerFactory:
    """conv / linear / norm builders. `bias` is the model's wish; a factory may refuse it
    (supermask layers never carry a bias, as in hidden-networks)."""

    conv: ConvFactory
    linear: LinearFactory
    norm: NormFactory


def _dense_conv(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                padding: int = 0, groups: int = 1, bias: bool = False) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                     groups=groups, bias=bias)


def _dense_linear(in_features: int, out_features: int, *, bias: bool = True) -> nn.Module:
    return nn.Linear(in_features, out_features, bias=bias)


DENSE = LayerFactory(conv=_dense_conv, linear=_dense_linear, norm=nn.BatchNorm2d)


def non_affine_bn(num_features: int) -> nn.Module:
    """BatchNorm without the learned scale and shift (supermasks; IMP with affine_bn=false)."""
    return nn.BatchNorm2d(num_features, affine=False)
