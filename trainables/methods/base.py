"""The hooks through which a method plugs into the one training engine (`trainables.loop`).

A method never owns a loop. The engine builds the model with the method's layer factory,
lets the method initialise it, optimises `method.trainable_parameters(model)`, and calls
the hooks below at fixed points. `model` is always the unwrapped module (never the DDP
wrapper), and hooks must not force a device sync except in `end_of_epoch`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables.config import ExperimentConfig
from trainables.models.layers import LayerFactory


class Method:
    """Default hooks: plain dense training of every parameter."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    # --- construction ---------------------------------------------------------------------
    def layer_factory(self) -> LayerFactory:
        """Which conv / linear / norm layers the model is built from."""
        raise NotImplementedError

    def init_model(self, model: nn.Module) -> None:
        """Initialise weights (and scores) after the model is built; seeded by the engine."""

    def trainable_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer parameter groups; frozen tensors must not appear here."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    # --- training hooks (called by the engine) ----------------------------------------------
    def on_train_start(self, model: nn.Module) -> None:
        """Once, after init or after a checkpoint was restored."""

    def before_step(self, model: nn.Module, step: int) -> None:
        """Before forward/backward of global step `step` (0-based)."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """After `optimizer.step()` of global step `step`."""

    def end_of_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Metrics to report for the epoch just finished (1-based)."""
        return {}

    # --- outputs ----------------------------------------------------------------------------
    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Current boolean masks by parameter name (empty for dense training)."""
        return {}

    # --- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """History the method keeps beyond the model (e.g. the OR of all masks seen)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
