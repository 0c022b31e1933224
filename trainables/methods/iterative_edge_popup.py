"""Iterative edge-popup, hard and soft (soft-iep.txt §4, Table 3, appendix B.1 Algorithm 1).

Cycle i trains edge-popup at k_i = 1 - (1 - m)(1 - p)^(i-1) for `schedule.epochs` epochs.
At the boundary into cycle i (the engine calls `begin_cycle` once), with m*_(i-1) the mask the
previous cycle ended with:
- hard pruning freezes the search space to m*_(i-1) ⊙ θ0 (edges outside it never return);
  soft pruning leaves every edge selectable;
- scores are inherited (s*_(i-1)), rewound to s_0 (SRw) or redrawn (SRi), then optionally
  zeroed outside m*_(i-1) ("zero init": s <- m* ⊙ s);
- the LR schedule restarts with a fresh optimizer state (LR rewinding), or the last LR is
  held with the optimizer state kept (fine-tuning, FT).
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.config import ExperimentConfig, IterativeEdgePopupConfig
from trainables.methods.base import CycleStart, Position
from trainables.methods.edge_popup import EdgePopup, supermask_layers
from trainables.metrics.dying import apparent_dying_ratio
from trainables.rng import stable_generator
from trainables.sparse.init import init_scores

__all__ = ["IterativeEdgePopup"]


class IterativeEdgePopup(EdgePopup):
    """Edge-popup in cycles; what a boundary does follows the config (Table 3)."""

    config_class = IterativeEdgePopupConfig
    method_cfg: IterativeEdgePopupConfig

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.rates = cfg.method.cycle_prune_rates()

    def prune_rate_at(self, pos: Position) -> float:
        return self.rates[pos.cycle - 1]

    def init_prune_rate(self) -> float:
        return self.rates[0]

    def init_model(self, model: nn.Module) -> None:
        """EP's init at k_1; keep s_0 when a boundary rewinds to it; hard: a full search space."""
        super().init_model(model)
        layers = supermask_layers(model)
        if self.method_cfg.score_reset == "rewind":
            self.initial_scores = {name: layer.scores.detach().cpu().clone() for name, layer in layers.items()}
        if self.method_cfg.pruning == "hard":
            for layer in layers.values():  # a buffer from the start, so checkpoints load by name
                layer.set_allowed(torch.ones_like(layer.weight, dtype=torch.bool))

    def exploration_metrics(self, model: nn.Module) -> dict[str, float]:
        """Hard pruning adds the apparent dying ratio; `dying_ratio` is its worst case (§5)."""
        out = super().exploration_metrics(model)
        if self.method_cfg.pruning == "hard":
            allowed = {name: layer.allowed for name, layer in supermask_layers(model).items()
                       if layer.allowed is not None}
            out["dying_ratio_apparent"] = apparent_dying_ratio(self.ever_cycle, allowed)
        return out

    def begin_cycle(self, model: nn.Module, cycle: int) -> CycleStart:
        c = self.method_cfg
        layers = supermask_layers(model)
        previous = {name: layer.current_mask().clone() for name, layer in layers.items()}  # m*_(i-1)
        generator = stable_generator("score-reinit", self.cfg.run.seed, cycle, top_bits=True)
        with torch.no_grad():
            for name, layer in layers.items():
                if c.pruning == "hard":
                    layer.set_allowed(previous[name])
                if c.score_reset == "rewind":
                    layer.scores.copy_(self.initial_scores[name].to(layer.scores.device))
                elif c.score_reset == "reinit":
                    init_scores(layer.scores, c.score_init, generator=generator)
                if c.zero_init:
                    layer.scores.mul_(previous[name])
        self.set_prune_rate(model, self.rates[cycle - 1])
        self.reset_cycle_history(model)
        if c.lr_reset == "hold":
            return CycleStart(lr="hold", reset_optimizer=False)
        return CycleStart(lr="rewind", reset_optimizer=True)
