"""Model zoo: `build_model` maps an ExperimentConfig to an architecture.

Models receive explicit layer sizes and a LayerFactory; every conv, linear and BatchNorm
comes from the factory, so the same architecture is dense or supermasked. The width
multiplier and the input shape are resolved here, once.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from trainables.config import CONV_POOLS, DATASETS, MODELS, ExperimentConfig
from trainables.models.conv import CONV_CHANNELS, HEAD_HIDDEN, ConvNet
from trainables.models.layers import DENSE, LayerFactory
from trainables.models.mlp import MLP
from trainables.models.resnet import STAGE_BLOCKS, STAGE_WIDTHS, ResNet

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
    convs = CONV_CHANNELS[: 2 * CONV_POOLS[cfg.model.name]]
    return ConvNet(layers, channels, side, scale(convs, cfg.model.width),
                   scale(HEAD_HIDDEN, cfg.model.width), classes)


def _resnet18(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    channels, _, classes = input_shape(cfg)
    return ResNet(layers, channels, scale(STAGE_WIDTHS, cfg.model.width), STAGE_BLOCKS, classes)


MODEL_BUILDERS: dict[str, Callable[[ExperimentConfig, LayerFactory], nn.Module]] = {
    "mlp": _mlp,
    **{name: _conv for name in CONV_POOLS},
    "resnet18": _resnet18,
}
assert set(MODEL_BUILDERS) == set(MODELS), "every name in config.MODELS needs a builder"


def build_model(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    """The architecture cfg.model names, for cfg.data's input shape, built from `layers`."""
    return MODEL_BUILDERS[cfg.model.name](cfg, layers)
