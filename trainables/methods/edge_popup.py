"""Edge-popup (Ramanujan et al. 2020; soft-iep.txt §2-3): learn scores, keep the top 1 - k.

Weights are frozen at a random init, BatchNorm is non-affine, and the optimizer sees only
the scores (weight decay applies to them, as in hidden-networks). The method records the
OR of every mask seen, from which `trainables.metrics.dying_ratio` gives d_t (eq. 2).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from trainables.config import EdgePopupConfig, ExperimentConfig
from trainables.methods.base import Method, Position, StepContext
from trainables.metrics.dying import dying_ratio
from trainables.models.layers import LayerFactory
from trainables.sparse.init import init_scores, init_weight
from trainables.sparse.supermask import SUPERMASK, SupermaskMixin, supermask_modules

__all__ = ["EdgePopup"]


def _layers(model: nn.Module) -> dict[str, SupermaskMixin]:
    layers = supermask_modules(model)
    if not layers:
        raise ValueError("edge-popup found no supermask layer: build the model with "
                         "method.layer_factory()")
    return layers


class EdgePopup(Method):
    """Hooks for edge-popup; state is the per-layer "ever selected" history."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        if not isinstance(cfg.method, EdgePopupConfig):
            raise TypeError(f"EdgePopup needs an EdgePopupConfig, got {type(cfg.method).__name__}")
        self.method_cfg: EdgePopupConfig = cfg.method
        self.ever: dict[str, Tensor] = {}

    # --- construction ---------------------------------------------------------------------
    def layer_factory(self) -> LayerFactory:
        return SUPERMASK

    def init_model(self, model: nn.Module) -> None:
        """Set k on every layer, then fill weights and scores from two seeded streams.

        Two CPU generators seeded from the (engine-seeded) global RNG: changing the weight
        init leaves the scores unchanged and vice versa, and values do not depend on device.
        """
        k = self.method_cfg.prune_rate
        weight_seed, score_seed = torch.randint(0, 2**62, (2,)).tolist()
        g_weight = torch.Generator().manual_seed(weight_seed)
        g_score = torch.Generator().manual_seed(score_seed)
        for layer in _layers(model).values():
            layer.prune_rate = k
            init_weight(layer.weight, self.method_cfg.weight_init, prune_rate=k, generator=g_weight)
            init_scores(layer.scores, self.method_cfg.score_init, generator=g_score)

    def trainable_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        """The scores, and nothing else: a stray trainable tensor means a non-factory layer."""
        layers = _layers(model)
        score_ids = {id(m.scores) for m in layers.values()}
        stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in score_ids]
        if stray:
            raise ValueError(f"edge-popup trains scores only, but these parameters require grad: "
                             f"{stray[:5]} (build every layer through method.layer_factory())")
        return [{"params": [m.scores for m in layers.values()]}]

    # --- history ----------------------------------------------------------------------------
    def on_train_start(self, model: nn.Module, pos: Position) -> None:
        """OR the current masks into the history (d_0 = k); moves a restored history on-device."""
        for name, layer in _layers(model).items():
            mask = layer.current_mask()
            past = self.ever.get(name)
            if past is None:
                self.ever[name] = mask.clone()
                continue
            if past.shape != mask.shape:
                raise ValueError(f"restored history of {name} has shape {tuple(past.shape)}, "
                                 f"the layer {tuple(mask.shape)}")
            self.ever[name] = past.to(device=mask.device, dtype=torch.bool).logical_or_(mask)

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """OR in the mask of the updated scores (the one the next forward will reuse)."""
        for name, layer in _layers(model).items():
            self.ever[name].logical_or_(layer.current_mask())

    def end_of_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        d = dying_ratio(self.ever)
        masks = [layer.current_mask() for layer in _layers(model).values()]
        kept = sum(int(torch.count_nonzero(m)) for m in masks)
        total = sum(m.numel() for m in masks)
        return {
            "dying_ratio": d,
            "k_minus_dying": self.method_cfg.prune_rate - d,
            "density": kept / total,
        }

    # --- outputs ----------------------------------------------------------------------------
    def masks(self, model: nn.Module) -> dict[str, Tensor]:
        """Current bool masks by mask name (copies: safe to keep or modify)."""
        return {name: layer.current_mask().clone() for name, layer in _layers(model).items()}

    # --- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The history on CPU, so a checkpoint loads on any device."""
        return {"ever": {name: t.detach().cpu().clone() for name, t in self.ever.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history; `on_train_start` moves it to the model's device."""
        self.ever = {name: t.detach().to(torch.bool).clone() for name, t in state["ever"].items()}
