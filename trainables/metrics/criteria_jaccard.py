"""Structural similarity of pruning criteria (fantastic-weights-dst.txt §4 eq. 1, §5.4, appendix K).

J̄(I_a, I_b) = 1/L Σ_l |I_a^l ∩ I_b^l| / |I_a^l ∪ I_b^l|: a Jaccard index per layer, then the
mean over layers (unlike `trainables.metrics.dying.jaccard_distance`, which pools all
layers). Used for the sets two criteria would prune from the same network state (Fig. 6a,
17, 18) and for final masks of runs from the same init (Fig. 6b, J_init).

Reference levels are exact expectations, not simulations: two independent uniform subsets of
size p of a population of M give |A ∩ B| = X ~ Hypergeometric(M, p, p) and J = X/(2p − X),
so E[J] = Σ_x P(X = x) · x/(2p − x) (scipy.stats.hypergeom). J_r, as the paper estimates it
(random criterion, different sparse inits), takes M = the layer's size; `j_r_active`
(random subsets of the SAME active set, i.e. the random criterion against itself from one
state) takes M = the active count. J_init, the overlap of random masks, takes p = the
layer's active count and M = its size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from itertools import combinations_with_replacement
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import pandas as pd

# scipy.stats and pandas are imported where used: every training process imports this module
# (through the DST method), and only update steps and reports need them.

__all__ = [
    "criteria_jaccard_rows",
    "expected_random_jaccard",
    "jaccard_index",
    "jaccard_matrix",
    "mask_jaccard_matrix",
    "mean_layer_jaccard",
    "random_reference",
]


def jaccard_index(a: Tensor, b: Tensor) -> float:
    """|a ∧ b| / |a ∨ b| of two bool tensors; 1.0 when both are empty (identical sets)."""
    if a.shape != b.shape:
        raise ValueError(f"set shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.bool(), b.to(device=a.device, dtype=torch.bool)
    union = int(torch.count_nonzero(a | b))
    return int(torch.count_nonzero(a & b)) / union if union else 1.0


def mean_layer_jaccard(sets_a: Mapping[str, Tensor], sets_b: Mapping[str, Tensor]) -> float:
    """Eq. 1: the per-layer Jaccard index averaged over the layers."""
    if set(sets_a) != set(sets_b):
        raise ValueError(f"the sets differ in layers: {sorted(set(sets_a) ^ set(sets_b))}")
    if not sets_a:
        raise ValueError("mean_layer_jaccard needs at least one layer")
    return float(np.mean([jaccard_index(sets_a[k], sets_b[k]) for k in sets_a]))


def expected_random_jaccard(population: int, size: int) -> float:
    """E[J] of two independent uniform subsets of `size` out of `population` (exact)."""
    if not 0 <= size <= population:
        raise ValueError(f"subset size {size} must lie in [0, population={population}]")
    if size == 0:
        return 1.0
    from scipy.stats import hypergeom

    # Sum over mean ± 12 sd only: the rest of the support weighs < 1e-30, and the pmf of a
    # million-weight layer's whole support would take seconds.
    q = size / population
    mean = size * q
    sd = math.sqrt(size * q * (1 - q) * (population - size) / max(1, population - 1))
    lo = max(2 * size - population, 0, math.floor(mean - 12 * sd) - 1)
    hi = min(size, math.ceil(mean + 12 * sd) + 1)
    x = np.arange(lo, hi + 1)
    return float(np.sum(np.exp(hypergeom.logpmf(x, population, size, size)) * x / (2 * size - x)))


def random_reference(pairs: Iterable[tuple[int, int]]) -> float:
    """Mean over layers of the expected random Jaccard, one (population, size) per layer."""
    values = [expected_random_jaccard(m, p) for m, p in pairs]
    if not values:
        raise ValueError("random_reference needs at least one layer")
    return float(np.mean(values))


def criteria_jaccard_rows(prune_sets: Mapping[str, Mapping[str, Tensor]], *,
                          active: Mapping[str, int], sizes: Mapping[str, int],
                          info: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Long-format rows, one per layer and unordered pair of criteria (self-pairs included).

    `prune_sets[criterion][layer]`: what that criterion prunes from the same state;
    `active`/`sizes`: the layer's active count and size, for the references j_r (subsets of
    the layer) and j_r_active (subsets of the active set). `info` (update index, step, ρ_t,
    the criterion driving the run, ...) is copied into every row.
    """
    names = list(prune_sets)
    layers = list(next(iter(prune_sets.values()))) if names else []
    rows = []
    for layer in layers:
        p = int(torch.count_nonzero(prune_sets[names[0]][layer]))
        j_r = expected_random_jaccard(sizes[layer], p)
        j_r_active = expected_random_jaccard(active[layer], p)
        for a, b in combinations_with_replacement(names, 2):
            rows.append({**(info or {}), "layer": layer, "a": a, "b": b,
                         "jaccard": jaccard_index(prune_sets[a][layer], prune_sets[b][layer]),
                         "pruned": p, "j_r": j_r, "j_r_active": j_r_active})
    return rows


def jaccard_matrix(rows: pd.DataFrame | list[dict[str, Any]]) -> pd.DataFrame:
    """Square criteria × criteria matrix of eq. 1, plus the J_r references as extra rows.

    As the paper averages (appendix K): the mean over runs (seeds) per layer first, then the
    mean over layers. Pass the rows of one update (e.g. `update == 1`, the first).
    """
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError("jaccard_matrix: no rows")
    per_layer = df.groupby(["a", "b", "layer"])[["jaccard", "j_r", "j_r_active"]].mean()
    pairs = per_layer.groupby(level=["a", "b"]).mean()
    names = list(dict.fromkeys([*df["a"], *df["b"]]))
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for (a, b), row in pairs.iterrows():
        out.loc[a, b] = out.loc[b, a] = row["jaccard"]
    refs = df.groupby("layer")[["j_r", "j_r_active"]].mean().mean()
    out.loc["J_r"] = refs["j_r"]
    out.loc["J_r (same active set)"] = refs["j_r_active"]
    return out


def mask_jaccard_matrix(masks: Mapping[str, Mapping[str, Tensor]]) -> pd.DataFrame:
    """Eq. 1 between every pair of runs' masks (Fig. 6b: final masks of runs from one init)."""
    import pandas as pd

    names = list(masks)
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for a, b in combinations_with_replacement(names, 2):
        out.loc[a, b] = out.loc[b, a] = mean_layer_jaccard(masks[a], masks[b])
    return out
