"""The one place where prune rate, density and sparsity are converted, so no key or caller can
read a kept fraction as a pruned one (hidden-networks uses `prune_rate` for both).

Words as the papers use them:
  k         prune rate: fraction of a layer's weights PRUNED (strong-lottery papers)
  density   fraction KEPT = 1 - k (DST papers)
  sparsity  1 - density (= k)

Counts are exact for decimal rates: k is read as the decimal the user typed
(`Fraction(str(float(k)))`), so 0.29 of 100 weights prunes exactly 29, where the binary
float product 0.29 * 100 = 28.999999999999996 would floor to 28.
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = [
    "density",
    "kept_count",
    "prune_rate_from_density",
    "pruned_count",
    "sparsity",
]


def _exact(rate: float | Fraction, what: str) -> Fraction:
    """The decimal a float was written as, checked to lie in [0, 1]."""
    value = rate if isinstance(rate, Fraction) else Fraction(str(float(rate)))
    if not 0 <= value <= 1:
        raise ValueError(f"{what} must lie in [0, 1], got {rate!r}")
    return value


def pruned_count(n: int, prune_rate: float | Fraction) -> int:
    """Weights removed from a layer of `n`: floor(k * n), exact for decimal k."""
    if n < 0:
        raise ValueError(f"layer size must be >= 0, got {n}")
    return math.floor(_exact(prune_rate, "prune rate k") * n)


def kept_count(n: int, prune_rate: float | Fraction) -> int:
    """Weights a layer of `n` keeps at prune rate k: n - floor(k n) = ceil((1 - k) n)."""
    return n - pruned_count(n, prune_rate)


def density(prune_rate: float | Fraction) -> float:
    """Kept fraction 1 - k (computed in decimal, so density(0.29) == 0.71 exactly)."""
    return float(1 - _exact(prune_rate, "prune rate k"))


def prune_rate_from_density(density: float | Fraction) -> float:
    """k = 1 - density, for configs that speak DST's language."""
    return float(1 - _exact(density, "density"))


# Sparsity (DST's word) is the same number as the prune rate k: 1 - density.
sparsity = prune_rate_from_density
