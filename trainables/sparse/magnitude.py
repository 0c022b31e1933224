"""Magnitude pruning with exact counts: a `>= threshold` test (open_lth's) can prune one weight
too many under ties; a top-k over |θ| cannot."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from trainables.sparse.density import kept_count
from trainables.sparse.selection import topk_mask

__all__ = ["magnitude_masks"]


def magnitude_masks(weights: Mapping[str, Tensor], prune_rate: float, scope: str = "global",
                    allowed: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Keep the largest |θ|: n - ⌊k·n⌋ over all layers together (global) or in each layer.

    `allowed` restricts the choice to earlier survivors (weights pruned before stay pruned
    even when their magnitude, kept at zero, would tie).
    """
    allowed = allowed or {}
    if scope == "layerwise":
        return {name: topk_mask(w, kept_count(w.numel(), prune_rate), allowed.get(name))
                for name, w in weights.items()}
    if scope != "global":
        raise ValueError(f"scope must be global or layerwise, got {scope!r}")
    names = list(weights)
    flat = torch.cat([w.detach().flatten() for w in weights.values()])
    space = None
    if allowed:
        space = torch.cat([allowed[n].flatten().to(flat.device) if n in allowed
                           else torch.ones(weights[n].numel(), dtype=torch.bool, device=flat.device)
                           for n in names])
    keep = topk_mask(flat, kept_count(flat.numel(), prune_rate), space)
    out, start = {}, 0
    for name in names:
        n = weights[name].numel()
        out[name] = keep[start:start + n].view(weights[name].shape)
        start += n
    return out
