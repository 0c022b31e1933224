"""Dense training: plain conv / linear / BatchNorm layers, every parameter trained.

The baseline against which the sparse methods are compared; its only knob is the weight
init of conv and linear layers (Kaiming, fan_in, ReLU gain). Biases and BatchNorm keep
PyTorch's defaults, and are kept out of weight decay (decaying BatchNorm's scale by
accident is a classic pitfall: the scale shrinks towards 0 and the layer with it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables.config import DenseConfig
from trainables.methods.base import CycleEnd, Method
from trainables.models.layers import DENSE, LayerFactory
from trainables.sparse.init import init_weight

__all__ = ["Dense", "decay_groups", "init_dense_weights"]


def init_dense_weights(model: nn.Module, name: str) -> None:
    """Initialise every conv / linear weight from one CPU stream seeded by the global RNG."""
    (seed,) = torch.randint(0, 2**62, (1,)).tolist()
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init_weight(module.weight, name, generator=generator)


def decay_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Conv / linear weights decay; biases and norm parameters do not."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            (decay if is_weight else no_decay).append(p)
    groups: list[dict[str, Any]] = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


class Dense(Method):
    """Default hooks of `Method` (train all parameters) plus the configured weight init."""

    config_class = DenseConfig
    method_cfg: DenseConfig

    def layer_factory(self) -> LayerFactory:
        return DENSE

    def init_model(self, model: nn.Module) -> None:
        """Kaiming-initialise every conv / linear weight from one seeded CPU stream."""
        init_dense_weights(model, self.method_cfg.weight_init)

    def trainable_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        return decay_groups(model)

    def end_of_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """density = 1.0: dense runs sit on every accuracy-against-density chart."""
        return {"density": 1.0}

    def end_of_cycle(self, model: nn.Module, cycle: int) -> CycleEnd:
        return CycleEnd(metrics={"density": 1.0})
