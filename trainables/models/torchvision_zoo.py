"""torchvision's own architectures, with every conv / linear / BatchNorm from a LayerFactory.

We do not re-write ResNet-50 & co.: torchvision builds its definition (weights=None, on the
meta device, so that nothing is allocated or initialised twice), and `use_factory_layers`
swaps each nn.Conv2d, nn.Linear and nn.BatchNorm2d for the factory's layer of the same
configuration (channels, kernel, stride, padding, groups, bias; BatchNorm's eps and
momentum) under the same module name. The state-dict keys therefore stay torchvision's,
and a dense build loads torchvision's state dicts with strict=True.

Used for the strong-lottery paper's ImageNet models (ResNet-50/101, Wide ResNet-50-2;
soft-iep.txt §5) and the DST paper's EfficientNet-B0 and ResNet-50 (fantastic-weights-dst.txt
A.1: "we use the implementation from pytorch models"). Any other torchvision model whose
weighted layers are 2-D convs, linears and BatchNorms converts the same way; a model with
any other weighted module (LayerNorm, a class token, ...) is refused rather than half-converted.
The names with `torchvision=True` in config.MODELS are torchvision's own builder names.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.layers import LayerFactory

__all__ = ["torchvision_model", "use_factory_layers"]


def torchvision_model(name: str, layers: LayerFactory, num_classes: int) -> nn.Module:
    """torchvision's `name` (untrained) for `num_classes` classes, built from `layers`.

    torchvision is imported here, not with the module: its import (torch._dynamo through
    torchvision.ops) costs seconds, in the driver and in every trial process, and only these
    models need it."""
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return use_factory_layers(model, layers)


def _single(value: int | tuple[int, ...] | str, what: str, where: str) -> int:
    """A square conv setting as one int; the factory takes no rectangles."""
    if isinstance(value, str):
        raise ValueError(f"{where}: padding={value!r} is not a number the layer factory takes")
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"{where}: {what}={tuple(value)} is not square")
    return value[0]


def _factory_conv(conv: nn.Conv2d, layers: LayerFactory, where: str) -> nn.Module:
    if _single(conv.dilation, "dilation", where) != 1 or conv.padding_mode != "zeros":
        raise ValueError(f"{where}: dilation {conv.dilation} / padding_mode {conv.padding_mode!r} "
                         "is not something the layer factory builds")
    return layers.conv(conv.in_channels, conv.out_channels,
                       _single(conv.kernel_size, "kernel_size", where),
                       stride=_single(conv.stride, "stride", where),
                       padding=_single(conv.padding, "padding", where),
                       groups=conv.groups, bias=conv.bias is not None)


def _factory_norm(bn: nn.BatchNorm2d, layers: LayerFactory) -> nn.Module:
    norm = layers.norm(bn.num_features)
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        norm.eps, norm.momentum = bn.eps, bn.momentum  # e.g. EfficientNet's eps=1e-3 variants
    return norm


def _replacement(module: nn.Module, layers: LayerFactory, where: str) -> nn.Module | None:
    """The factory's layer for `module`, None for a module without weights of its own."""
    if type(module) is nn.Conv2d:
        return _factory_conv(module, layers, where)
    if type(module) is nn.Linear:
        return layers.linear(module.in_features, module.out_features, bias=module.bias is not None)
    if type(module) is nn.BatchNorm2d:
        return _factory_norm(module, layers)
    own = [n for n, _ in module.named_parameters(recurse=False)]
    own += [n for n, b in module.named_buffers(recurse=False) if b is not None]
    if own:
        raise ValueError(f"{where}: a {type(module).__name__} holding {', '.join(own)}, which the "
                         "layer factory cannot build")
    return None


def use_factory_layers(model: nn.Module, layers: LayerFactory) -> nn.Module:
    """Replace, in place and under the same names, every conv / linear / BatchNorm2d."""
    for name, module in list(model.named_modules()):
        new = _replacement(module, layers, name or type(model).__name__)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
    return model
