"""Average ranks of methods over blocks, Friedman test and Nemenyi critical difference.

fantastic-weights-dst.txt §5.2, Fig. 3 (after Demšar 2006): within each block (a model,
growth criterion and density) the pruning criteria are ranked by test accuracy (1 = best;
seeds averaged first), the ranks averaged over the blocks, the Friedman test asks whether
any criterion differs, and two criteria whose average ranks differ by less than the critical
difference CD = q_α · sqrt(k(k + 1) / (6N)) are not significantly different (Nemenyi,
q_α = studentized range quantile / √2; k criteria, N blocks). The statistics are scipy's and
scikit-posthocs', not re-implemented here; this module only shapes the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy.stats import friedmanchisquare, rankdata, studentized_range

__all__ = ["RankResult", "block_scores", "nemenyi_critical_difference", "rank_methods"]


@dataclass(frozen=True)
class RankResult:
    average_ranks: pd.Series  # method -> mean rank over blocks, best (lowest) first
    n_blocks: int
    friedman_statistic: float
    friedman_p: float
    critical_difference: float
    nemenyi_p: pd.DataFrame  # pairwise p-values of the Nemenyi post-hoc test
    alpha: float

    def not_different(self) -> list[tuple[str, str]]:
        """Pairs whose average ranks differ by less than the critical difference."""
        names = list(self.average_ranks.index)
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
                if abs(self.average_ranks[a] - self.average_ranks[b]) < self.critical_difference]


def block_scores(df: pd.DataFrame, *, blocks: Sequence[str], method: str, score: str) -> pd.DataFrame:
    """Blocks × methods table of the score, repeats (seeds) averaged; incomplete blocks dropped."""
    missing = [c for c in (*blocks, method, score) if c not in df.columns]
    if missing:
        raise ValueError(f"block_scores: columns {missing} not in the results ({list(df.columns)})")
    table = df.groupby([*blocks, method])[score].mean().unstack(method)
    return table.dropna(axis=0, how="any")


def nemenyi_critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """CD = q_α sqrt(k(k+1)/(6N)), q_α the studentized range quantile (∞ dof) over √2."""
    if k < 2 or n_blocks < 1:
        raise ValueError(f"the critical difference needs k >= 2 methods and N >= 1 blocks, got {k}, {n_blocks}")
    q = studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n_blocks)))


def rank_methods(df: pd.DataFrame, *, blocks: Sequence[str], method: str = "criterion",
                 score: str = "test_acc", higher_is_better: bool = True,
                 alpha: float = 0.05) -> RankResult:
    """Average ranks, Friedman test and Nemenyi CD of `method` over `blocks` (Fig. 3)."""
    table = block_scores(df, blocks=blocks, method=method, score=score)
    k, n = table.shape[1], table.shape[0]
    if k < 3 or n < 2:
        raise ValueError(f"the Friedman test needs >= 3 methods and >= 2 complete blocks, got {k} and {n}")
    values = table.to_numpy(dtype=float)
    ranks = rankdata(-values if higher_is_better else values, axis=1)  # ties share the mean rank
    average = pd.Series(ranks.mean(axis=0), index=table.columns).sort_values()
    statistic, p = friedmanchisquare(*values.T)
    pairwise = sp.posthoc_nemenyi_friedman(pd.DataFrame(values, columns=table.columns))
    return RankResult(average_ranks=average, n_blocks=n, friedman_statistic=float(statistic),
                      friedman_p=float(p), critical_difference=nemenyi_critical_difference(k, n, alpha),
                      nemenyi_p=pairwise, alpha=alpha)
