"""How much two masks overlap, against what two random masks would share (chance levels).

soft-iep-appendix C.3.1 (Fig. 15) compares methods' masks by Jaccard distance (eq. 5, in
`trainables.metrics.dying.jaccard_distance`) against the chance ratio k²/(2k - k²), and A.3
(Fig. 8) counts the entries where two masks agree against the chance k² + (1 - k)².

Which k: for two independent uniform masks that each KEEP a fraction d of n edges,
E|m1 ∧ m2| = d²n and E|m1 ∨ m2| = (2d - d²)n, so the chance Jaccard *index* is d²/(2d - d²)
= d/(2 - d) with d the kept fraction (the remaining ratio on Fig. 15's x axis); the chance
*distance* is one minus it. The agreement chance d² + (1 - d)² is symmetric in d and 1 - d,
so it is the same for the kept and the pruned fraction.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from trainables.metrics.dying import _paired

__all__ = [
    "jaccard_distance_chance",
    "jaccard_index_chance",
    "shared_mask_ratio",
    "shared_ratio_chance",
]

Masks = Mapping[str, Tensor] | Tensor


def _check_density(density: float) -> float:
    if not 0 < density <= 1:
        raise ValueError(f"density (kept fraction) must lie in (0, 1], got {density}")
    return float(density)


def jaccard_index_chance(density: float) -> float:
    """E|m1 ∧ m2| / E|m1 ∨ m2| of two random masks keeping `density`: d²/(2d - d²)."""
    d = _check_density(density)
    return d * d / (2 * d - d * d)


def jaccard_distance_chance(density: float) -> float:
    """1 - d²/(2d - d²): the Jaccard distance two unrelated masks of density d have on average."""
    return 1.0 - jaccard_index_chance(density)


def shared_mask_ratio(m1: Masks, m2: Masks) -> float:
    """Fraction of entries where the masks agree (m1 - m2 = 0), over all layers together."""
    same = total = 0
    for a, b in _paired(m1, m2):
        a, b = a.bool(), b.to(device=a.device, dtype=torch.bool)
        same += int(torch.count_nonzero(a == b))
        total += a.numel()
    if total == 0:
        raise ValueError("shared_mask_ratio: the masks hold no entries")
    return same / total


def shared_ratio_chance(prune_rate: float) -> float:
    """k² + (1 - k)²: the agreement of two independent random masks pruning k (A.3, Fig. 8)."""
    if not 0 <= prune_rate <= 1:
        raise ValueError(f"prune rate must lie in [0, 1], got {prune_rate}")
    return prune_rate**2 + (1 - prune_rate) ** 2
