"""Model zoo: `build_model` maps an ExperimentConfig to an architecture.

Models receive explicit layer sizes and a LayerFactory; every conv, linear and BatchNorm
comes from the factory, so the same architecture is dense or supermasked. The width
multiplier and the input shape are resolved here, once.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from trainables.config import DATASETS, MODELS, ExperimentConfig
from trainables.models.cifar_resnet import CIFAR_RESNET_DEPTHS, CIFAR_RESNET_WIDTHS, cifar_resnet
from trainables.models.conv import CONV_CHANNELS, HEAD_HIDDEN, ConvNet
from trainables.models.convmixer import (
    CONVMIXER_DEPTH,
    CONVMIXER_DIM,
    CONVMIXER_KERNEL,
    CONVMIXER_PATCH,
    conv_mixer,
)
from trainables.models.dst_small import (
    LARGE_MLP_HIDDEN,
    SMALL_CNN_WIDTHS,
    SMALL_MLP_HIDDEN,
    SmallCNN,
)
from trainables.models.layers import DENSE, LayerFactory
from trainables.models.lenet import LENET_CONV_WIDTHS, LENET_HIDDEN, LeNet5Caffe
from trainables.models.mlp import MLP
from trainables.models.resnet import STAGE_BLOCKS, STAGE_WIDTHS, ResNet
from trainables.models.resnext import (
    RESNEXT29_BLOCKS,
    RESNEXT29_CARDINALITY,
    RESNEXT29_STEM,
    RESNEXT29_WIDTHS,
    ResNeXt,
)
from trainables.models.torchvision_zoo import torchvision_model
from trainables.models.vgg import VGG, VGG16_PLAN, scale_plan

__all__ = ["DENSE", "LayerFactory", "MODEL_BUILDERS", "build_model", "input_shape", "scale"]


def scale(sizes: tuple[int, ...], width: float) -> tuple[int, ...]:
    """Width-multiplied layer sizes, rounded, never below 1."""
    return tuple(max(1, round(s * width)) for s in sizes)


def input_shape(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """(channels, side, num_classes) the model sees, after data.resize."""
    spec = DATASETS[cfg.data.dataset]
    return spec.channels, cfg.data.resize or spec.image_size, spec.num_classes


def _mlp(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    channels, side, classes = input_shape(cfg)
    return MLP(layers, channels * side * side, scale(cfg.model.mlp_hidden, cfg.model.width), classes)


def _conv(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    channels, side, classes = input_shape(cfg)
    convs = CONV_CHANNELS[: 2 * MODELS[cfg.model.name].pools]
    return ConvNet(layers, channels, side, scale(convs, cfg.model.width),
                   scale(HEAD_HIDDEN, cfg.model.width), classes)


def _resnet18(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    channels, _, classes = input_shape(cfg)
    return ResNet(layers, channels, scale(STAGE_WIDTHS, cfg.model.width), STAGE_BLOCKS, classes)


def _cifar_resnet(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    channels, _, classes = input_shape(cfg)
    depth = int(cfg.model.name.removeprefix("resnet"))
    return cifar_resnet(layers, channels, depth, scale(CIFAR_RESNET_WIDTHS, cfg.model.width), classes)


def _resnext29_32x4d(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    """Width multiplies the stem and the bottleneck width d; the cardinality stays 32."""
    channels, _, classes = input_shape(cfg)
    stem, *widths = scale((RESNEXT29_STEM, *RESNEXT29_WIDTHS), cfg.model.width)
    return ResNeXt(layers, channels, stem, RESNEXT29_CARDINALITY, tuple(widths), RESNEXT29_BLOCKS,
                   classes)


def _convmixer_256_8(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    channels, _, classes = input_shape(cfg)
    (dim,) = scale((CONVMIXER_DIM,), cfg.model.width)
    return conv_mixer(layers, channels, dim, CONVMIXER_DEPTH, CONVMIXER_KERNEL, CONVMIXER_PATCH,
                      classes)


def _mlp_of(hidden: tuple[int, ...]) -> Callable[[ExperimentConfig, LayerFactory], nn.Module]:
    def build(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
        channels, side, classes = input_shape(cfg)
        return MLP(layers, channels * side * side, scale(hidden, cfg.model.width), classes)
    return build


def _cnn_small(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    channels, side, classes = input_shape(cfg)
    return SmallCNN(layers, channels, side, scale(SMALL_CNN_WIDTHS, cfg.model.width), classes)


def _lenet5_caffe(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    channels, side, classes = input_shape(cfg)
    c1, c2, hidden = scale((*LENET_CONV_WIDTHS, LENET_HIDDEN), cfg.model.width)
    return LeNet5Caffe(layers, channels, side, (c1, c2), hidden, classes)


def _vgg16_bn(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    channels, _, classes = input_shape(cfg)
    return VGG(layers, channels, scale_plan(VGG16_PLAN, cfg.model.width), classes)


def _torchvision(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    """torchvision's definition as is: 3-channel stem, no width multiplier (config checks both)."""
    channels, _, classes = input_shape(cfg)
    if channels != 3 or cfg.model.width != 1:
        raise ValueError(f"{cfg.model.name} is torchvision's: 3 channels and width 1 only, "
                         f"got {channels} channels and width {cfg.model.width}")
    return torchvision_model(cfg.model.name, layers, classes)


MODEL_BUILDERS: dict[str, Callable[[ExperimentConfig, LayerFactory], nn.Module]] = {
    "mlp": _mlp,
    **{name: _conv for name, spec in MODELS.items() if spec.pools},
    "resnet18": _resnet18,
    **{f"resnet{depth}": _cifar_resnet for depth in CIFAR_RESNET_DEPTHS},
    "resnext29_32x4d": _resnext29_32x4d,
    "convmixer_256_8": _convmixer_256_8,
    "mlp_small": _mlp_of(SMALL_MLP_HIDDEN),
    "mlp_large": _mlp_of(LARGE_MLP_HIDDEN),
    "cnn_small": _cnn_small,
    "lenet5_caffe": _lenet5_caffe,
    "vgg16_bn": _vgg16_bn,
    **{name: _torchvision for name, spec in MODELS.items() if spec.torchvision},
}
assert set(MODEL_BUILDERS) == set(MODELS), "every name in config.MODELS needs a builder"


def build_model(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    """The architecture cfg.model names, for cfg.data's input shape, built from `layers`."""
    return MODEL_BUILDERS[cfg.model.name](cfg, layers)
