"""IMP's magnitude pruning: remove ⌈p·remaining⌉ of the surviving weights per round.

open_lth prunes ⌈0.2·remaining⌉ by global magnitude over conv and linear
weights, with the mask built from the previous round's final weights. Counts are exact: the
weights to remove are the smallest by |θ| among the current survivors, picked by top-k, so
ties never remove one weight too many (a `>= threshold` test can).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from trainables.sparse.selection import topk_mask

__all__ = ["PruneResult", "imp_prune", "one_shot_prune", "removed_count"]


def removed_count(remaining: int, fraction: float) -> int:
    """⌈p·remaining⌉, with p read as the decimal it was typed as (0.2·15 = 3 exactly)."""
    return math.ceil(Fraction(str(float(fraction))) * remaining)


@dataclass(frozen=True)
class PruneResult:
    """New masks and the pruning threshold: the largest |θ| removed (0 when nothing is)."""

    masks: dict[str, Tensor]
    threshold: float


def _prune_flat(flat: Tensor, allowed: Tensor, remove: int) -> tuple[Tensor, float]:
    """Keep all but the `remove` smallest |θ| among `allowed`; the largest removed |θ|."""
    alive = int(allowed.sum())
    keep = topk_mask(flat, alive - remove, allowed)
    removed = allowed & ~keep
    threshold = float(flat.abs()[removed].max()) if remove else 0.0
    return keep, threshold


def imp_prune(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], fraction: float,
              scope: str = "global") -> PruneResult:
    """Remove ⌈fraction·remaining⌉ survivors of `masks` by |θ| (global, or in each layer)."""
    if scope == "layerwise":
        out: dict[str, Tensor] = {}
        threshold = 0.0
        for name, w in weights.items():
            allowed = masks[name].to(torch.bool).flatten()
            keep, t = _prune_flat(w.detach().flatten(), allowed,
                                  removed_count(int(allowed.sum()), fraction))
            out[name] = keep.view(w.shape)
            threshold = max(threshold, t)
        return PruneResult(out, threshold)
    if scope != "global":
        raise ValueError(f"scope must be global or layerwise, got {scope!r}")
    return _global(weights, masks, lambda alive: removed_count(alive, fraction))


def one_shot_prune(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], sparsity: float,
                   scope: str = "global") -> PruneResult:
    """Prune straight to `sparsity` (fraction of all prunable weights removed): n - ⌊s·n⌋ kept."""
    def remove(alive: int, total: int) -> int:
        kept = total - math.floor(Fraction(str(float(sparsity))) * total)
        return max(0, alive - kept)

    if scope == "layerwise":
        out: dict[str, Tensor] = {}
        threshold = 0.0
        for name, w in weights.items():
            allowed = masks[name].to(torch.bool).flatten()
            keep, t = _prune_flat(w.detach().flatten(), allowed, remove(int(allowed.sum()), w.numel()))
            out[name] = keep.view(w.shape)
            threshold = max(threshold, t)
        return PruneResult(out, threshold)
    total = sum(w.numel() for w in weights.values())
    return _global(weights, masks, lambda alive: remove(alive, total))


def _global(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], count) -> PruneResult:  # noqa: ANN001
    names = list(weights)
    flat = torch.cat([weights[n].detach().flatten() for n in names])
    allowed = torch.cat([masks[n].to(device=flat.device, dtype=torch.bool).flatten() for n in names])
    keep, threshold = _prune_flat(flat, allowed, count(int(allowed.sum())))
    out, start = {}, 0
    for name in names:
        n = weights[name].numel()
        out[name] = keep[start:start + n].view(weights[name].shape)
        start += n
    return PruneResult(out, threshold)
