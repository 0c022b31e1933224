"""Prune and grow selections of dynamic sparse training (fantastic-weights-dst.txt §3).

Prune criteria, score s(θ), the LOWEST scores pruned, among ACTIVE weights only:
  magnitude     |θ|
  set           equal numbers of the smallest non-negative and the largest negative θ (SET)
  mest          |θ| + λ|∇θL|
  sensitivity   |∇θL| / |θ|
  rsensitivity  |θ| / |∇θL|
  snip          |θ · ∇θL|
  random        uniform
Plugins add criteria and growth rules (`trainables.plugins`): a score function each, kept in
EXTRA_CRITERIA / EXTRA_GROWTH and selected by the same `select_lowest`.

Growth, the HIGHEST scores grown, among INACTIVE weights only:
  random        uniform
  gradient      |∂L/∂(m⊙θ)|, the dense gradient of the effective weight (not ∂L/∂θ, which
                the mask zeroes at inactive weights)

Why +inf instead of "multiply by the mask": the reference code multiplies
scores by the mask, so an inactive weight scores 0 and must be counted back out; ranking
only eligible entries cannot confuse an inactive zero with an active one. Divisions use
ε = 1e-8 as the paper's code does (an active θ = 0 or ∇ = 0 must not give 0/0). A NaN score
(a diverged run) is never selected. Ties go to the lower index (stable sort): the counts are
exact and the choice is reproducible. Selections work on flat tensors, so local pruning
(one layer) and global pruning (all layers concatenated, appendix I) share one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from trainables.config.methods import DST_CRITERIA, DST_GROWTHS

__all__ = [
    "CRITERIA",
    "EPS",
    "EXTRA_CRITERIA",
    "EXTRA_GROWTH",
    "GRADIENT_CRITERIA",
    "GROWTH",
    "ScoreRule",
    "grow_selection",
    "growth_needs_gradient",
    "prune_scores",
    "prune_selection",
    "select_lowest",
    "set_selection",
]

CRITERIA: tuple[str, ...] = DST_CRITERIA  # the seven built-ins (the config's choices add plugins')
GRADIENT_CRITERIA: frozenset[str] = frozenset({"mest", "sensitivity", "rsensitivity", "snip"})
GROWTH: tuple[str, ...] = DST_GROWTHS
EPS = 1e-8


@dataclass(frozen=True)
class ScoreRule:
    """A plugin's criterion or growth rule: its score function and the names of its parameters.

    Criterion: score(weight, grad, active, *, generator, **params), LOWEST pruned among active.
    Growth: score(effective_grad, inactive, *, generator, **params), HIGHEST grown among inactive
    (an inactive weight is zero, so its gradient is all a growth rule can rank).
    """

    name: str
    score: Callable[..., Tensor]
    needs_grad: bool
    params: tuple[str, ...] = ()  # config keys method.<name>_<param>


EXTRA_CRITERIA: dict[str, ScoreRule] = {}
EXTRA_GROWTH: dict[str, ScoreRule] = {}


def growth_needs_gradient(growth: str) -> bool:
    """Whether `growth` ranks by ∂L/∂(m⊙θ), which the masked layers keep on update steps only."""
    return growth == "gradient" or (growth in EXTRA_GROWTH and EXTRA_GROWTH[growth].needs_grad)


def _rule_scores(rule: ScoreRule, args: tuple[Tensor | None, ...], shape: torch.Size,
                 generator: torch.Generator | None, params: Mapping[str, Any] | None) -> Tensor:
    out = rule.score(*args, generator=generator, **(params or {}))
    if not isinstance(out, Tensor) or out.shape != shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{rule.name}: its score function returned {got}, not a tensor of shape {tuple(shape)}")
    return out.detach().float()


def select_lowest(key: Tensor, eligible: Tensor, n: int) -> Tensor:
    """Bool mask (flat) of the `n` eligible entries with the lowest key; ties by index."""
    key, eligible = key.flatten(), eligible.flatten()
    candidates = torch.nonzero(eligible).flatten()  # ascending: a stable sort keeps index order
    if not 0 <= n <= candidates.numel():
        raise ValueError(f"cannot select {n} of {candidates.numel()} eligible entries")
    out = torch.zeros_like(eligible, dtype=torch.bool)
    if n == 0:
        return out
    ranked = key[candidates]
    ranked = torch.where(torch.isnan(ranked), torch.full_like(ranked, float("inf")), ranked)
    order = torch.sort(ranked, stable=True).indices[:n]  # only the eligible entries are sorted
    return out.scatter_(0, candidates[order], True)


def prune_scores(criterion: str, weight: Tensor, grad: Tensor | None, *, mest_lambda: float = 1.0,
                 generator: torch.Generator | None = None, active: Tensor | None = None,
                 params: Mapping[str, Any] | None = None) -> Tensor:
    """s(θ) of every entry (lower = pruned first); `set` has no score (see `set_selection`).
    A plugin's criterion gets the active mask and its `params` too."""
    if criterion in EXTRA_CRITERIA:
        rule = EXTRA_CRITERIA[criterion]
        if rule.needs_grad and grad is None:
            raise ValueError(f"criterion {criterion} needs the gradient of the weights")
        mask = torch.ones_like(weight, dtype=torch.bool) if active is None else active.bool()
        return _rule_scores(rule, (weight.detach(), None if grad is None else grad.detach(), mask),
                            weight.shape, generator, params)
    w = weight.detach().abs().float()
    if criterion == "magnitude":
        return w
    if criterion == "random":
        return torch.rand(weight.shape, generator=generator).to(weight.device)
    if criterion not in GRADIENT_CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join([*CRITERIA, *EXTRA_CRITERIA])}, "
                         f"got {criterion!r}")
    if grad is None:
        raise ValueError(f"criterion {criterion} needs the gradient of the weights")
    g = grad.detach().abs().float()
    if criterion == "mest":
        return w + mest_lambda * g
    if criterion == "sensitivity":
        return g / (w + EPS)
    if criterion == "rsensitivity":
        return w / (g + EPS)
    return w * g  # snip


def set_selection(weight: Tensor, active: Tensor, n: int) -> Tensor:
    """SET: prune n = n_pos + n_neg, n_pos = ceil(n/2) smallest θ >= 0, n_neg the largest θ < 0.

    The counts are equal (up to one for odd n) and add up to exactly n; when one sign runs
    out, the other gives the rest. (sparse_learning rounds each half up and prunes one too
    many for odd n; its HEAD removes every positive weight.) An active
    θ = 0 counts as non-negative: the smallest magnitude, pruned first.
    """
    w, active = weight.detach().flatten().float(), active.flatten().bool()
    pos, neg = active & (w >= 0), active & (w < 0)
    n_pos_avail, n_neg_avail = int(torch.count_nonzero(pos)), int(torch.count_nonzero(neg))
    if n > n_pos_avail + n_neg_avail:
        raise ValueError(f"cannot prune {n} of {n_pos_avail + n_neg_avail} active weights")
    n_pos = min(n - n // 2, n_pos_avail)
    n_neg = n - n_pos
    if n_neg > n_neg_avail:
        n_neg = n_neg_avail
        n_pos = n - n_neg
    return select_lowest(w, pos, n_pos) | select_lowest(-w, neg, n_neg)


def prune_selection(criterion: str, weight: Tensor, grad: Tensor | None, active: Tensor, n: int, *,
                    mest_lambda: float = 1.0, generator: torch.Generator | None = None,
                    params: Mapping[str, Any] | None = None) -> Tensor:
    """Flat bool mask of the n active entries that `criterion` prunes."""
    if criterion == "set":
        return set_selection(weight, active, n)
    scores = prune_scores(criterion, weight, grad, mest_lambda=mest_lambda, generator=generator,
                          active=active, params=params)
    return select_lowest(scores, active, n)


def grow_selection(growth: str, inactive: Tensor, n: int, *, effective_grad: Tensor | None = None,
                   generator: torch.Generator | None = None, params: Mapping[str, Any] | None = None) -> Tensor:
    """Flat bool mask of the n inactive entries grown: uniformly, or by largest |∂L/∂(m⊙θ)|,
    or by a plugin's rule (largest score)."""
    if growth in EXTRA_GROWTH:
        rule = EXTRA_GROWTH[growth]
        if rule.needs_grad and effective_grad is None:
            raise ValueError(f"growth {growth} needs ∂L/∂(m⊙θ), the dense gradient of the effective weight")
        grad = None if effective_grad is None else effective_grad.detach()
        key = -_rule_scores(rule, (grad, inactive.bool()), inactive.shape, generator, params)
    elif growth == "random":
        key = torch.rand(inactive.shape, generator=generator).to(inactive.device)
    elif growth == "gradient":
        if effective_grad is None:
            raise ValueError("gradient growth needs ∂L/∂(m⊙θ), the dense gradient of the effective weight")
        key = -effective_grad.detach().abs().float()
    else:
        raise ValueError(f"growth must be one of {', '.join([*GROWTH, *EXTRA_GROWTH])}, got {growth!r}")
    return select_lowest(key, inactive, n)
