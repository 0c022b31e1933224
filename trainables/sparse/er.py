"""Per-layer active-weight counts of a sparse initialisation at global density D.

fantastic-weights-dst.txt §3.1: Erdős-Rényi (ER) scales a layer's density with
(n_in + n_out) / (n_in · n_out); ER-Kernel (ERK) with Σshape / Πshape
= (n_in + n_out + w + h) / (n_in · n_out · w · h) for a conv (= ER for a linear layer).
Uniform gives every sparse layer the same density.

Solve ε so that Σ_l ε·p_l·N_l equals the budget K = ceil(D · N) (N: all weights of the
layers, D = density = fraction KEPT, converted through `trainables.sparse.density`). A
layer with ε·p_l > 1 becomes dense, its N_l moves to the fixed side, and ε is solved again
(sparse_learning's ER never caps, and rigl's port draws Bernoulli masks that match the
counts only in expectation). Layers the caller keeps dense (e.g. the
first and the last) are on the fixed side from the start. The arithmetic is exact
(fractions), and the real-valued targets ε·p_l·N_l are rounded to integers by the largest
remainder, so the counts add up to exactly K: masks are then drawn with exactly these
counts, never by Bernoulli trials, which match D only in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from fractions import Fraction

from trainables.sparse.density import kept_count, prune_rate_from_density

__all__ = ["DISTRIBUTIONS", "layer_active_counts", "raw_density_weight"]

DISTRIBUTIONS: tuple[str, ...] = ("erk", "er", "uniform")


def raw_density_weight(shape: tuple[int, ...], distribution: str) -> Fraction:
    """p_l: the unnormalised density of a weight of `shape` (out, in, *kernel)."""
    if len(shape) < 2:
        raise ValueError(f"ER/ERK needs a weight with >= 2 dims, got shape {shape}")
    if distribution == "erk":
        return Fraction(sum(shape), math.prod(shape))
    if distribution == "er":
        n_out, n_in = shape[0], shape[1]
        return Fraction(n_in + n_out, n_in * n_out)
    if distribution == "uniform":
        return Fraction(1)
    raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")


def layer_active_counts(shapes: Mapping[str, tuple[int, ...]], density: float, distribution: str,
                        dense: Collection[str] = ()) -> dict[str, int]:
    """Active weights per layer: dense layers keep all, the others share the rest by p_l.

    The counts sum to exactly ceil(density · Σ N_l). Raises ValueError when the layers kept
    dense alone exceed that budget.
    """
    unknown = set(dense) - set(shapes)
    if unknown:
        raise ValueError(f"dense layers {sorted(unknown)} are not among the layers {list(shapes)}")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    budget = kept_count(sum(sizes.values()), prune_rate_from_density(density))
    raw = {name: raw_density_weight(shape, distribution) for name, shape in shapes.items()}
    fixed = set(dense)
    forced = sum(sizes[n] for n in fixed)
    if forced > budget:
        raise ValueError(f"the layers kept dense ({sorted(fixed)}) hold {forced} weights, more than "
                         f"the {budget} a density of {density} allows")
    while True:
        free = [n for n in shapes if n not in fixed]
        remaining = budget - sum(sizes[n] for n in fixed)
        if not free:
            if remaining:
                raise ValueError(f"every layer is dense but {remaining} weights are left to place")
            break
        eps = Fraction(remaining) / sum(raw[n] * sizes[n] for n in free)
        over = [n for n in free if eps * raw[n] > 1]
        if not over:
            break
        fixed.add(max(over, key=lambda n: raw[n]))  # the densest first; then solve again
    counts = {n: sizes[n] for n in fixed}
    if free:
        targets = {n: eps * raw[n] * sizes[n] for n in free}
        floors = {n: math.floor(t) for n, t in targets.items()}
        leftover = remaining - sum(floors.values())
        # largest remainder; ties by layer order, so the result is deterministic
        order = sorted(free, key=lambda n: -(targets[n] - floors[n]))
        for i, n in enumerate(order):
            floors[n] += int(i < leftover)
        counts.update(floors)
    return {n: counts[n] for n in shapes}
