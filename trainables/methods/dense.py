"""Dense training: plain conv / linear / BatchNorm layers, every parameter trained.

The baseline against which the sparse methods are compared; its only knob is the weight
init of conv and linear layers (Kaiming, fan_in, ReLU gain). Biases and BatchNorm keep
PyTorch's defaults.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.config import DenseConfig, ExperimentConfig
from trainables.methods.base import Method
from trainables.models.layers import DENSE, LayerFactory
from trainables.sparse.init import init_weight

__all__ = ["Dense"]


class Dense(Method):
    """Default hooks of `Method` (train all parameters) plus the configured weight init."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        if not isinstance(cfg.method, DenseConfig):
            raise TypeError(f"Dense needs a DenseConfig, got {type(cfg.method).__name__}")
        self.method_cfg: DenseConfig = cfg.method

    def layer_factory(self) -> LayerFactory:
        return DENSE

    def init_model(self, model: nn.Module) -> None:
        """Kaiming-initialise every conv / linear weight from one seeded CPU stream."""
        (seed,) = torch.randint(0, 2**62, (1,)).tolist()
        generator = torch.Generator().manual_seed(seed)
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                init_weight(module.weight, self.method_cfg.weight_init, generator=generator)
