"""Exploration metrics of a mask history (soft-iep.txt §3, appendix C.3.1).

Dying ratio (eq. 2): d_t = |{weights never selected in m_1..m_t}| / |θ0|, counted over all
masked layers together (a total, not a mean of per-layer ratios). Methods record only the
OR of every mask seen ("ever selected"); d_0 = k, d_t never rises, and k - d_t is the
fraction of edges first masked but selected at least once.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from trainables.sparse.bits import PackedBits

__all__ = ["apparent_dying_ratio", "dying_ratio", "jaccard_distance"]

Masks = Mapping[str, Tensor] | Tensor


def _ones(t: Tensor | PackedBits) -> int:
    return t.count() if isinstance(t, PackedBits) else int(torch.count_nonzero(t))


def dying_ratio(ever_selected: Mapping[str, Tensor] | Mapping[str, PackedBits]) -> float:
    """Fraction of all masked weights never selected so far (eq. 2); bool or bit-packed histories."""
    if not ever_selected:
        raise ValueError("dying_ratio needs at least one layer's history")
    total = sum(t.numel() for t in ever_selected.values())
    if total == 0:
        raise ValueError("dying_ratio: the layers hold no weights")
    never = sum(t.numel() - _ones(t) for t in ever_selected.values())
    return never / total


def _paired(m1: Masks, m2: Masks) -> list[tuple[Tensor, Tensor]]:
    if isinstance(m1, Tensor) and isinstance(m2, Tensor):
        pairs = [(m1, m2)]
    elif isinstance(m1, Mapping) and isinstance(m2, Mapping):
        if set(m1) != set(m2):
            raise ValueError(f"mask sets differ in layers: {sorted(set(m1) ^ set(m2))}")
        pairs = [(m1[k], m2[k]) for k in m1]
    else:
        raise TypeError("jaccard_distance takes two tensors or two name -> tensor mappings")
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"mask shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return pairs


def jaccard_distance(m1: Masks, m2: Masks) -> float:
    """1 - |m1 ∧ m2| / |m1 ∨ m2| over all layers together (appendix eq. 5); 0 if both empty."""
    inter = union = 0
    for a, b in _paired(m1, m2):
        a, b = a.bool(), b.to(device=a.device, dtype=torch.bool)
        inter += int(torch.count_nonzero(a & b))
        union += int(torch.count_nonzero(a | b))
    return 1.0 - inter / union if union else 0.0


def apparent_dying_ratio(ever_selected: Mapping[str, Tensor], allowed: Mapping[str, Tensor]) -> float:
    """Hard iEP's apparent dying ratio: edges of the cycle's search space never selected, / |θ0|.

    soft-iep.txt §5 (Fig. 5a, dashed): hard pruning counts dying edges among m*_(i-1) ⊙ θ0
    only. The worst case (solid) also counts every edge removed in earlier cycles, which is
    `dying_ratio` itself: an edge outside the search space is never selected. Layers absent
    from `allowed` have the whole layer as search space.
    """
    total = sum(t.numel() for t in ever_selected.values())
    if total == 0:
        raise ValueError("apparent_dying_ratio: the layers hold no weights")
    never = 0
    for name, ever in ever_selected.items():
        space = allowed.get(name)
        unseen = ~ever.bool() if space is None else space.to(ever.device).bool() & ~ever.bool()
        never += int(torch.count_nonzero(unseen))
    return never / total
