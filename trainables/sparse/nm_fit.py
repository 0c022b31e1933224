"""Does a config's N:M pattern tile every layer its method masks? Checked before a sweep starts.

Separate from trainables.sparse.nm because it builds the method and the model (on the meta
device, no memory), and the methods import trainables.sparse.nm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables.config import ExperimentConfig
from trainables.methods import build_method
from trainables.models import build_model
from trainables.sparse.nm import layer_patterns
from trainables.sparse.nm_pattern import parse_pattern

__all__ = ["masked_layer_shapes", "misfit_problem"]


def masked_layer_shapes(cfg: ExperimentConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the weights `cfg`'s method masks, from the model built on the meta device."""
    method = build_method(cfg)
    with torch.device("meta"):
        model = build_model(cfg, method.layer_factory())
    if hasattr(method, "prunable"):
        layers: dict[str, Any] = method.prunable(model)
    else:
        layers = {f"{n}.weight": mod for n, mod in model.named_modules()
                  if isinstance(mod, (nn.Conv2d, nn.Linear)) and hasattr(mod, "weight")}
    return {name: tuple(mod.weight.shape) for name, mod in layers.items()}


_CHECKED: dict[tuple[Any, ...], str | None] = {}


def misfit_problem(cfg: ExperimentConfig) -> str | None:
    """One line naming a masked layer that `cfg`'s N:M pattern does not tile (misfit=refuse)."""
    if parse_pattern(cfg.sparsity.pattern) is None or cfg.sparsity.misfit != "refuse":
        return None
    key = (cfg.model, cfg.data.dataset, cfg.data.resize, cfg.method.name,
           getattr(cfg.method, "prune_shortcuts", None), cfg.sparsity)
    if key not in _CHECKED:
        try:
            layer_patterns(masked_layer_shapes(cfg), cfg.sparsity.pattern, cfg.sparsity.misfit)
            _CHECKED[key] = None
        except ValueError as e:
            _CHECKED[key] = str(e)
    return _CHECKED[key]
