"""The mask pattern setting (`sparsity.pattern`): unstructured, or N:M, and its count rules.

N:M keeps exactly N weights in every group of M consecutive weights along a layer's input
dimension. A linear weight (out, in) is grouped along `in`; a conv weight (out, c, kh, kw)
along its flattened input dimension c·kh·kw in PyTorch's memory order (c outer, kw inner),
i.e. along each row of the im2col matrix W.view(out, -1) that the conv is lowered to. So M
must divide c·kh·kw (a 3x3 conv on 3 channels has 27: no M > 1 but 3, 9, 27 divides it);
`sparsity.misfit` says whether such a layer refuses the config or stays unstructured at the
pattern's density N/M.

Counts when a method's schedule passes through rates above the pattern's (a progressive or
iterative prune rate, multicoat's coats, IMP's rounds): a layer at prune rate k keeps
`group_keep(k)` = max(N, M - ⌊k·M⌋) per group (⌊⌋ with a 1e-6 tolerance, so rates that are
N/M up to float noise give exactly N). This module imports nothing from trainables, so the
config can validate with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["NM", "PATTERN_HELP", "group_keep", "imp_round_keep", "parse_pattern", "pattern_problem"]

PATTERN_HELP = "unstructured, or N:M (N < M, e.g. 2:4, 1:4, 4:8)"
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_TOL = 1e-6


@dataclass(frozen=True)
class NM:
    """N kept in every group of M consecutive input weights."""

    n: int
    m: int

    @property
    def density(self) -> float:
        return self.n / self.m

    @property
    def prune_rate(self) -> float:
        return 1 - self.n / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


def parse_pattern(text: str) -> NM | None:
    """None for unstructured, else the N:M pair; ValueError (one line) for anything else."""
    if text.strip().lower() == "unstructured":
        return None
    match = _NM.match(text)
    if not match:
        raise ValueError(f"sparsity.pattern: {text!r} is not {PATTERN_HELP}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ValueError(f"sparsity.pattern: {text!r} needs 0 < N < M ({PATTERN_HELP})")
    return NM(n, m)


def group_keep(nm: NM, prune_rate: float) -> int:
    """Weights kept per group of M at prune rate k: max(N, M - ⌊k·M⌋)."""
    return max(nm.n, nm.m - math.floor(prune_rate * nm.m + _TOL))


def imp_round_keep(nm: NM, prune_fraction: float, r: int, rounds: int) -> int:
    """Per-group count of IMP round r (1 = dense) of `rounds`, reaching exactly N at the last.

    Round r follows the unstructured schedule's remaining fraction (1-p)^(r-1), rounded per
    group by `group_keep`, floored at N; the last round is N whatever p is, so the pattern is
    reached in the configured number of rounds.
    """
    if r <= 1:
        return nm.m
    if r >= rounds:
        return nm.n
    return group_keep(nm, 1 - (1 - prune_fraction) ** (r - 1))


def _close(a: float, b: float) -> bool:
    return abs(a - b) < _TOL


def pattern_problem(exp: Any) -> str | None:
    """One line saying why `exp`'s method cannot take its N:M pattern, or None.

    Layer shapes are checked separately (`trainables.sparse.nm.misfit_problem`), since that
    needs the model built.
    """
    nm = parse_pattern(exp.sparsity.pattern)
    if nm is None:
        return None
    m = exp.method
    label = f"sparsity.pattern={nm}"
    name = m.name
    if name in ("dense", "dense_lrr"):
        return (f"sparsity.pattern: {nm} applies to edge_popup, iep, dst and imp; method {name} "
                f"trains no N:M mask (use sparsity.pattern=unstructured)")
    if name == "edge_popup":
        if not _close(m.prune_rate, nm.prune_rate):
            return (f"method.prune_rate: {m.prune_rate:g} keeps {1 - m.prune_rate:g} of the weights, but "
                    f"{label} keeps {nm.density:g}; set method.prune_rate={nm.prune_rate:g}")
    elif name == "iep":
        last = m.cycle_prune_rates()[-1]
        if not _close(last, nm.prune_rate):
            return (f"method.target_remaining: the last cycle keeps {1 - last:g} of the weights, but "
                    f"{label} keeps {nm.density:g}; set method.target_remaining={nm.density:g}")
    elif name == "dst":
        if m.distribution != "uniform":
            return (f"method.distribution: {m.distribution} sets per-layer densities, which a fixed "
                    f"{label} (density {nm.density:g} in every layer) does not have; set "
                    f"method.distribution=uniform")
        if not _close(m.density, nm.density):
            return (f"method.density: {m.density:g} disagrees with {label} (density {nm.density:g}); "
                    f"set method.density={nm.density:g}")
        if m.dense_first or m.dense_last:
            return f"method.dense_first/dense_last: a dense layer breaks {label}'s density; set both false"
        if m.scope != "local":
            return f"method.scope: {label} regrows within each layer's groups; set method.scope=local"
    elif name == "imp":
        if m.one_shot_sparsity is not None:
            return (f"method.one_shot_sparsity: {label} sets the final density ({nm.density:g}); leave "
                    f"one_shot_sparsity unset")
        if m.prune_biases:
            return f"method.prune_biases: biases have no input dimension to group by {label}; set false"
        if m.rounds < 2:
            return f"method.rounds: {label} is reached in the pruned rounds; set method.rounds >= 2"
    else:
        return f"sparsity.pattern: method {name} has no N:M rule (use sparsity.pattern=unstructured)"
    return None
