"""Prune-rate schedules of the strong-lottery family (soft-iep.txt §4, appendix B.1, C.1, C.2.2).

All rates are prune rates k (fraction PRUNED, `trainables.sparse.density`). They are rounded
to 12 decimals so that k reads as the decimal a user would type: 1 - 0.8**2 is
0.3599999999999999 in binary floating point, and `kept_count` (exact for decimals) would
then keep one weight too many whenever 0.36·n is an integer.
"""

from __future__ import annotations

__all__ = [
    "coat_prune_rates",
    "iterative_prune_rates",
    "progressive_prune_rates",
    "shrinkage_for_target",
]

_DIGITS = 12


def _rate(value: float) -> float:
    return round(value, _DIGITS)


def iterative_prune_rates(shrinkage: float, cycles: int, first: float | None = None) -> tuple[float, ...]:
    """k_i for cycles i = 1..M: the remaining ratio shrinks by (1 - p) per cycle.

    §4.1: with an initial prune rate m, (1 - m)(1 - p)^(i-1) of the weights remain after
    cycle i, so k_i = 1 - (1 - m)(1 - p)^(i-1); by default m = p, i.e. k_i = 1 - (1 - p)^i
    (Table 3, Algorithm 1 line 3).
    """
    if not 0 < shrinkage < 1:
        raise ValueError(f"shrinkage p must lie in (0, 1), got {shrinkage}")
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    m = shrinkage if first is None else first
    if not 0 <= m < 1:
        raise ValueError(f"first prune rate m must lie in [0, 1), got {m}")
    return tuple(_rate(1 - (1 - m) * (1 - shrinkage) ** (i - 1)) for i in range(1, cycles + 1))


def shrinkage_for_target(target_remaining: float, cycles: int, first: float | None = None) -> float:
    """p such that cycle M ends at `target_remaining` (e.g. 0.3 in 3 cycles: p = 1 - 0.3^(1/3)).

    Without m: (1 - p)^M = r. With m: (1 - m)(1 - p)^(M-1) = r.
    """
    if not 0 < target_remaining < 1:
        raise ValueError(f"target remaining ratio must lie in (0, 1), got {target_remaining}")
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    if first is None:
        return 1 - target_remaining ** (1 / cycles)
    if cycles == 1 or target_remaining >= 1 - first:
        raise ValueError(f"a first prune rate m={first} leaves {1 - first:g}; reaching "
                         f"{target_remaining:g} needs at least 2 cycles and a target below {1 - first:g}")
    return 1 - (target_remaining / (1 - first)) ** (1 / (cycles - 1))


def progressive_prune_rates(final_prune_rate: float, stages: int, schedule: str) -> tuple[float, ...]:
    """k of each of `stages` equal stages of one training run, ending at `final_prune_rate`.

    Appendix C.1, Table 5: the prune rate rises `stages` times within a fixed budget.
    exp: the remaining ratio falls geometrically, (1 - k)^(s/C) after stage s (a constant
    shrinkage per stage, as iterative EP); lin: it falls linearly, k·s/C. One stage is EP.
    """
    if not 0 <= final_prune_rate < 1:
        raise ValueError(f"final prune rate must lie in [0, 1), got {final_prune_rate}")
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    if schedule == "exp":
        return tuple(_rate(1 - (1 - final_prune_rate) ** (s / stages)) for s in range(1, stages + 1))
    if schedule == "lin":
        return tuple(_rate(final_prune_rate * s / stages) for s in range(1, stages + 1))
    raise ValueError(f"progressive schedule must be exp or lin, got {schedule!r}")


def coat_prune_rates(prune_rate: float, coats: int) -> tuple[float, ...]:
    """k_1 < ... < k_N of an N-coated supermask whose first (least pruned) coat keeps 1 - k.

    "Linear" spanning: the coats' densities fall linearly, d_j = (1 - k)(N - j + 1)/N, i.e.
    the k_j are evenly spaced between k and 1 (k_j = k + (1 - k)(j - 1)/N). The union of the
    coats (the edges in use) is the first coat, so the ticket's density stays 1 - k.
    """
    if not 0 <= prune_rate < 1:
        raise ValueError(f"prune rate must lie in [0, 1), got {prune_rate}")
    if coats < 1:
        raise ValueError(f"coats must be >= 1, got {coats}")
    return tuple(_rate(prune_rate + (1 - prune_rate) * (j - 1) / coats) for j in range(1, coats + 1))
