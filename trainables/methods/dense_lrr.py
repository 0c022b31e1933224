"""Dense lottery ticket with LR rewinding (Renda et al. 2020), the dense reference of
soft-iep-appendix C.2.1 (Fig. 10, "Dense LT w/ LR rewinding").

Cycle 1 trains the dense network. At the boundary into cycle i+1 the smallest-magnitude
weights are pruned to k_i = 1 - (1 - p)^i (globally by default), the survivors keep their
trained values, and the LR schedule restarts with a fresh optimizer state. Pruned weights
stay exactly zero: the forward masks them and `after_step` re-applies the mask.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from trainables.config import DenseLRRConfig, ExperimentConfig
from trainables.methods.base import CycleEnd, CycleStart, Method, Position, StepContext
from trainables.methods.dense import decay_groups, init_dense_weights
from trainables.models.layers import LayerFactory
from trainables.sparse.magnitude import magnitude_masks
from trainables.sparse.masked import MASKED, MaskedMixin, masked_modules

__all__ = ["DenseLRR"]


def _layers(model: nn.Module) -> dict[str, MaskedMixin]:
    layers = masked_modules(model)
    if not layers:
        raise ValueError("dense_lrr found no masked layer: build the model with method.layer_factory()")
    return layers


class DenseLRR(Method):
    """Magnitude pruning at cycle boundaries, weights kept, LR rewound."""

    config_class = DenseLRRConfig
    method_cfg: DenseLRRConfig

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.rates = cfg.method.cycle_prune_rates()

    def layer_factory(self) -> LayerFactory:
        return MASKED

    def init_model(self, model: nn.Module) -> None:
        init_dense_weights(model, self.method_cfg.weight_init)

    def trainable_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        return decay_groups(model)

    def on_train_start(self, model: nn.Module, pos: Position) -> None:
        for layer in _layers(model).values():  # masks are buffers: restored with the model
            layer.apply_mask_()

    def begin_cycle(self, model: nn.Module, cycle: int) -> CycleStart:
        layers = _layers(model)
        masks = magnitude_masks({n: m.weight for n, m in layers.items()}, self.rates[cycle - 1],
                                self.method_cfg.scope, allowed={n: m.mask for n, m in layers.items()})
        for name, layer in layers.items():
            layer.set_mask(masks[name])
        return CycleStart(lr="rewind", reset_optimizer=True)

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        for layer in _layers(model).values():
            layer.apply_mask_()

    def _remaining(self, model: nn.Module) -> float:
        masks = [layer.mask for layer in _layers(model).values()]
        return sum(int(torch.count_nonzero(m)) for m in masks) / sum(m.numel() for m in masks)

    def end_of_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        return {"density": self._remaining(model)}

    def end_of_cycle(self, model: nn.Module, cycle: int) -> CycleEnd:
        return CycleEnd(metrics={"density": self._remaining(model)},
                        masks=self.masks(model))

    def masks(self, model: nn.Module) -> dict[str, Tensor]:
        return {name: layer.mask.clone() for name, layer in _layers(model).items()}
