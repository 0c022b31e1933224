"""A test plugin that registers one of everything: a growth rule, a method, a model, a dataset
and a space (the example package registers the criterion)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from search_spaces import SearchSpace
from trainables.config import DatasetSpec, ExperimentConfig, MethodConfig, ModelSpec, param
from trainables.methods.base import Method, StepContext
from trainables.methods.dense import decay_groups, init_dense_weights
from trainables.models import input_shape
from trainables.models.layers import DENSE, LayerFactory
from trainables.plugins import Param, PluginAPI

SPARSESWEEP_PLUGIN_API = 1


def largest_grad_times(effective_grad: Tensor, inactive: Tensor, *, generator: torch.Generator | None = None,
                       power: float = 1.0) -> Tensor:
    """Grow where |∂L/∂(m⊙θ)|^power is largest (power 1: RigL's gradient growth)."""
    return effective_grad.abs().pow(power)


@dataclass(frozen=True)
class ClippedDenseConfig(MethodConfig):
    name: str = param("clipped_dense", "method")
    clip: float = param(1.0, "largest gradient entry magnitude", gt=0)


class ClippedDense(Method):
    """Dense training whose gradients are clipped entrywise before each optimizer step."""

    config_class = ClippedDenseConfig

    def layer_factory(self) -> LayerFactory:
        return DENSE

    def init_model(self, model: nn.Module) -> None:
        init_dense_weights(model, "kaiming_normal")

    def trainable_parameters(self, model: nn.Module) -> list[dict]:
        return decay_groups(model)

    def before_optimizer_step(self, model: nn.Module, ctx: StepContext) -> bool:
        clip = self.method_cfg.clip
        for p in model.parameters():
            if p.grad is not None:
                p.grad.clamp_(-clip, clip)
        return False


def two_layer(cfg: ExperimentConfig, layers: LayerFactory) -> nn.Module:
    """flatten -> linear(32) -> ReLU -> linear(classes), every linear from the factory."""
    channels, side, classes = input_shape(cfg)
    return nn.Sequential(nn.Flatten(), layers.linear(channels * side * side, 32, bias=True), nn.ReLU(),
                         layers.linear(32, classes, bias=True))


def blobs(cfg) -> tuple[Tensor, ...]:
    """Two Gaussian blobs in 4x4 one-channel images: 256 training and 64 test examples."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(320) % 2
    x = torch.randn(320, 1, 4, 4, generator=g) + (2.0 * y - 1.0).view(-1, 1, 1, 1)
    return x[:256], y[:256], x[256:], y[256:]


SPACE = SearchSpace(name="demo_space", description="the demo plugin's method on its dataset and model",
                    base={"data.dataset": "blobs", "model.name": "two_layer", "method.name": "clipped_dense",
                          "data.batch_size": 32, "schedule.epochs": 1},
                    grid={"method.clip": (0.1, 1.0)})


def register(api: PluginAPI) -> None:
    api.growth("gradpow", largest_grad_times, needs_grad=True,
               params={"power": Param(float, 1.0, "exponent of |∂L/∂(m⊙θ)|", gt=0)})
    api.method("clipped_dense", ClippedDenseConfig, ClippedDense, family="dense", label="clipped dense",
               short_keys={"method.clip": "clip"})
    api.model("two_layer", two_layer, spec=ModelSpec(tabular=True))
    api.dataset("blobs", DatasetSpec(2, 1, 4, 256, bundled=True), read=blobs)
    api.space(SPACE)
