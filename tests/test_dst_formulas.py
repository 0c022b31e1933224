"""DST formulas on hand-computed cases: ER/ERK counts, prune criteria, ρ_t, Jaccard, ranks, ITOP."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from trainables.methods.dst import prune_fraction_at
from trainables.metrics.criteria_jaccard import (
    criteria_jaccard_rows,
    expected_random_jaccard,
    jaccard_index,
    jaccard_matrix,
    mean_layer_jaccard,
)
from trainables.metrics.itop import itop_ratio, record_masks
from trainables.metrics.loss_gap import loss_gap
from trainables.metrics.ranking import nemenyi_critical_difference, rank_methods
from trainables.sparse.dst_criteria import (
    grow_selection,
    prune_scores,
    prune_selection,
    select_lowest,
    set_selection,
)
from trainables.sparse.er import layer_active_counts, raw_density_weight

# ----- ER / ERK --------------------------------------------------------------------------


def test_erk_matches_the_closed_form_by_hand() -> None:
    # conv 3->4, 3x3: N = 108, p = (4+3+3+3)/108 = 13/108; linear 4->2: N = 8, p = (2+4)/8.
    # D = 0.2 of 116 weights: K = ceil(23.2) = 24. eps = 24 / (13 + 6) = 24/19:
    # conv 13·24/19 = 16.42, linear 6·24/19 = 7.58 -> floors 16 + 7 = 23, the one left goes to
    # the larger remainder (linear .58 > conv .42): 16 and 8.
    shapes = {"conv": (4, 3, 3, 3), "fc": (2, 4)}
    assert raw_density_weight((4, 3, 3, 3), "erk") == pytest.approx(13 / 108)
    assert raw_density_weight((4, 3, 3, 3), "er") == pytest.approx(7 / 12)  # channels only
    assert layer_active_counts(shapes, 0.2, "erk") == {"conv": 16, "fc": 8}


def test_a_layer_above_density_one_becomes_dense_and_the_rest_is_rescaled() -> None:
    # ER, D = 0.5 of 100 + 2 weights: K = 51. eps = 51 / (20·100/100 + 3/2·2) = 51/23,
    # so b would get eps·3/2 = 3.3 > 1: b dense (2 weights), a gets the other 49.
    shapes = {"a": (10, 10), "b": (1, 2)}
    assert layer_active_counts(shapes, 0.5, "er") == {"a": 49, "b": 2}
    # The global count is exact, for any density and distribution.
    big = {"c1": (16, 3, 3, 3), "c2": (32, 16, 3, 3), "fc": (10, 32 * 4), "out": (10, 10)}
    total = sum(math.prod(s) for s in big.values())
    for dist in ("erk", "er", "uniform"):
        for d in (0.01, 0.05, 0.1, 0.29, 0.5, 0.9, 1.0):
            counts = layer_active_counts(big, d, dist)
            assert sum(counts.values()) == math.ceil(round(d * total, 9)), (dist, d)
            assert all(0 <= counts[n] <= math.prod(big[n]) for n in big)


def test_uniform_with_dense_first_and_last_rescales_the_middle() -> None:
    shapes = {"first": (4, 4), "mid": (10, 10), "last": (2, 4)}
    # D = 0.5 of 124: K = 62; first 16 + last 8 dense, mid gets 38.
    assert layer_active_counts(shapes, 0.5, "uniform", {"first", "last"}) == {"first": 16, "mid": 38, "last": 8}
    with pytest.raises(ValueError, match="kept dense"):
        layer_active_counts(shapes, 0.1, "uniform", {"first", "last"})


# ----- prune criteria -------------------------------------------------------------------


W = torch.tensor([0.5, -0.1, 0.2, -0.4, 0.05, 0.3])
G = torch.tensor([0.1, -2.0, 0.01, -0.5, 0.1, 0.9])  # signs matter nowhere but in a broken formula
ALL = torch.ones(6, dtype=torch.bool)


def _pruned(criterion: str, n: int, active: torch.Tensor = ALL, lam: float = 1.0) -> set[int]:
    sel = prune_selection(criterion, W, G, active, n, mest_lambda=lam)
    return set(torch.nonzero(sel).flatten().tolist())


def test_each_criterion_prunes_its_lowest_scores_by_hand() -> None:
    # |θ| = .5 .1 .2 .4 .05 .3 -> two smallest: 4 (.05), 1 (.1)
    assert _pruned("magnitude", 2) == {4, 1}
    # |θ| + |∇| = .6 2.1 .21 .9 .15 1.2 -> 4, 2
    assert _pruned("mest", 2) == {4, 2}
    # |∇|/|θ| = .2 20 .05 1.25 2 3 -> 2, 0
    assert _pruned("sensitivity", 2) == {2, 0}
    # |θ|/|∇| = 5 .05 20 .8 .5 .333 -> 1, 5
    assert _pruned("rsensitivity", 2) == {1, 5}
    # |θ∇| = .05 .2 .002 .2 .005 .27 -> 2, 4
    assert _pruned("snip", 2) == {2, 4}
    # inactive entries are never pruned: without 4 and 1, magnitude takes 2 (.2) and 5 (.3)
    active = torch.tensor([True, False, True, True, False, True])
    assert _pruned("magnitude", 2, active) == {2, 5}
    assert prune_scores("snip", W, G)[1].item() == pytest.approx(0.2)


def test_mest_with_lambda_zero_prunes_what_magnitude_prunes() -> None:
    g = torch.Generator().manual_seed(0)
    w, grad = torch.randn(500, generator=g), torch.randn(500, generator=g) * 10
    active = torch.rand(500, generator=g) < 0.6
    for n in (1, 37, 150):
        assert torch.equal(prune_selection("mest", w, grad, active, n, mest_lambda=0.0),
                           prune_selection("magnitude", w, grad, active, n))
    # ... and λ > 0 does not (the gradient is large here)
    assert not torch.equal(prune_selection("mest", w, grad, active, 150, mest_lambda=1.0),
                           prune_selection("magnitude", w, grad, active, 150))


def test_set_prunes_equal_counts_by_sign() -> None:
    w = torch.tensor([0.3, -0.2, 0.1, -0.05, 0.7, -0.9, 0.02, -0.6])
    sel = set_selection(w, torch.ones(8, dtype=torch.bool), 4)
    # two smallest non-negative (.02, .1) and two largest negative (-.05, -.2)
    assert set(torch.nonzero(sel).flatten().tolist()) == {6, 2, 3, 1}
    # odd n: exactly n, the extra one non-negative (magnitude would take -.05 and .02 .1 -.2 .3)
    sel5 = set_selection(w, torch.ones(8, dtype=torch.bool), 5)
    assert int(sel5.sum()) == 5 and int((sel5 & (w >= 0)).sum()) == 3 and int((sel5 & (w < 0)).sum()) == 2
    # one sign runs out: the other gives the rest, still exactly n
    few_neg = torch.tensor([0.3, 0.2, 0.1, -0.05, 0.7])
    sel = set_selection(few_neg, torch.ones(5, dtype=torch.bool), 4)
    assert set(torch.nonzero(sel).flatten().tolist()) == {3, 2, 1, 0}


def test_set_prunes_an_active_zero_first_and_never_an_inactive_one() -> None:
    # an active θ = 0 is non-negative and the smallest of them: SET prunes it before 0.1;
    # the inactive 0 at index 5 is never a candidate
    w = torch.tensor([0.3, 0.0, 0.1, -0.2, -0.4, 0.0])
    active = torch.tensor([1, 1, 1, 1, 1, 0], dtype=torch.bool)
    sel = set_selection(w, active, 2)  # one non-negative (the 0 at index 1), one negative (-0.2)
    assert torch.nonzero(sel).flatten().tolist() == [1, 3]
    sel3 = set_selection(w, active, 3)  # two non-negative: 0 then 0.1
    assert torch.nonzero(sel3).flatten().tolist() == [1, 2, 3]


def test_selection_is_exact_under_ties_and_skips_nan() -> None:
    key = torch.tensor([0.0, 0.0, 0.0, float("nan"), 0.0])
    eligible = torch.ones(5, dtype=torch.bool)
    assert torch.nonzero(select_lowest(key, eligible, 2)).flatten().tolist() == [0, 1]
    assert not bool(select_lowest(key, eligible, 4)[3])  # NaN is the last resort
    with pytest.raises(ValueError, match="cannot select 6"):
        select_lowest(key, eligible, 6)


def test_growth_selects_only_inactive_entries() -> None:
    inactive = torch.tensor([True, False, True, True, False])
    eff = torch.tensor([0.1, 9.0, -0.5, 0.2, 8.0])
    # gradient: largest |g| among inactive -> 2 (.5), 3 (.2); 1 and 4 are active
    assert set(torch.nonzero(grow_selection("gradient", inactive, 2, effective_grad=eff)).flatten().tolist()) == {2, 3}
    picks = grow_selection("random", inactive, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(picks, inactive)


# ----- prune-fraction schedules -------------------------------------------------------


def test_prune_fraction_schedules_by_hand() -> None:
    kw = {"rho": 0.5, "end_step": 1000}
    assert prune_fraction_at(0, schedule="cosine", **kw) == pytest.approx(0.5)
    assert prune_fraction_at(500, schedule="cosine", **kw) == pytest.approx(0.25)  # ρ/2 (1 + cos π/2)
    assert prune_fraction_at(250, schedule="cosine", **kw) == pytest.approx(0.25 * (1 + math.cos(math.pi / 4)))
    assert prune_fraction_at(1000, schedule="cosine", **kw) == pytest.approx(0.0)
    # appendix J's linear schedule: ×0.99 every 600 steps
    assert prune_fraction_at(599, schedule="linear", **kw) == pytest.approx(0.5)
    assert prune_fraction_at(1200, schedule="linear", **kw) == pytest.approx(0.5 * 0.99**2)
    assert prune_fraction_at(777, schedule="constant", **kw) == 0.5


# ----- Jaccard (eq. 1), references, ITOP, loss gap, ranks ------------------------------------


def test_mean_layer_jaccard_is_eq1_not_pooled() -> None:
    a = {"x": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "y": torch.tensor([1, 0] * 10, dtype=torch.bool)}
    b = {"x": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "y": torch.tensor([1, 0] * 10, dtype=torch.bool)}
    assert jaccard_index(a["x"], b["x"]) == pytest.approx(1 / 3)
    # eq. 1: (1/3 + 1) / 2; pooling both layers would give 11/13
    assert mean_layer_jaccard(a, b) == pytest.approx(2 / 3)


def test_expected_random_jaccard_by_hand() -> None:
    # two 2-subsets of 4: overlap 0 (p = 1/6), 1 (4/6, J = 1/3), 2 (1/6, J = 1) -> 7/18
    assert expected_random_jaccard(4, 2) == pytest.approx(7 / 18)
    assert expected_random_jaccard(10, 10) == pytest.approx(1.0)
    assert expected_random_jaccard(1000, 100) == pytest.approx(0.1 / 1.9, rel=0.02)  # ≈ d/(2 - d)


def test_criteria_jaccard_rows_and_matrix() -> None:
    sets = {"a": {"l": torch.tensor([1, 1, 0, 0], dtype=torch.bool)},
            "b": {"l": torch.tensor([1, 0, 1, 0], dtype=torch.bool)}}
    rows = criteria_jaccard_rows(sets, active={"l": 4}, sizes={"l": 8}, info={"update": 1})
    assert len(rows) == 3 and all(r["update"] == 1 for r in rows)
    m = jaccard_matrix(rows)
    assert m.loc["a", "b"] == pytest.approx(1 / 3) and m.loc["a", "a"] == 1.0
    assert m.loc["J_r (same active set)", "a"] == pytest.approx(7 / 18)
    assert m.loc["J_r", "a"] == pytest.approx(expected_random_jaccard(8, 2))


def test_jaccard_matrix_takes_each_layers_mean_over_runs_then_the_mean_over_layers() -> None:
    def sets(a: list[int], b: list[int]) -> dict[str, torch.Tensor]:
        return {"a": torch.tensor(a, dtype=torch.bool), "b": torch.tensor(b, dtype=torch.bool)}

    seed0 = {"l1": sets([1, 1, 0, 0], [1, 0, 1, 0]),  # J = 1/3
             "l2": sets([1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0])}  # J = 1
    seed1 = {"l1": sets([1, 1, 0, 0], [1, 1, 0, 0])}  # J = 1; this run has no row for l2
    rows = []
    for seed, layers in ((0, seed0), (1, seed1)):
        by_criterion = {c: {layer: s[c] for layer, s in layers.items()} for c in ("a", "b")}
        rows += criteria_jaccard_rows(by_criterion, active={"l1": 4, "l2": 6}, sizes={"l1": 4, "l2": 8},
                                      info={"seed": seed})
    m = jaccard_matrix(rows)
    # l1: (1/3 + 1) / 2 = 2/3, l2: 1 -> (2/3 + 1) / 2 = 5/6; pooling the three rows gives 7/9
    assert m.loc["a", "b"] == pytest.approx(5 / 6)
    assert m.loc["b", "a"] == pytest.approx(5 / 6)
    # references per layer, then the mean: l1 E(4, 2) = 7/18 (twice), l2 E(8, 4) and E(6, 4)
    assert m.loc["J_r", "a"] == pytest.approx((7 / 18 + expected_random_jaccard(8, 4)) / 2)
    assert m.loc["J_r (same active set)", "b"] == pytest.approx(
        (7 / 18 + expected_random_jaccard(6, 4)) / 2)
    assert expected_random_jaccard(8, 4) != pytest.approx(7 / 18)  # else pooling could not show


def test_itop_is_the_or_of_all_masks() -> None:
    ever: dict[str, torch.Tensor] = {}
    record_masks(ever, {"l": torch.tensor([1, 0, 0, 0], dtype=torch.bool)})
    assert itop_ratio(ever) == 0.25
    record_masks(ever, {"l": torch.tensor([0, 1, 0, 0], dtype=torch.bool)})
    record_masks(ever, {"l": torch.tensor([1, 0, 0, 0], dtype=torch.bool)})
    assert itop_ratio(ever) == 0.5


def test_loss_gap() -> None:
    assert loss_gap([1.0, None, 0.5], [0.25, 0.2, 0.5])[::2] == [0.75, 0.0]
    assert math.isnan(loss_gap([1.0, None], [0.2, 0.2])[1])


def test_friedman_and_nemenyi_by_hand() -> None:
    # Demšar (2006) Table 5(a): q_0.05 = 1.960, 2.343, 2.569, 2.728 for k = 2..5
    for k, q in ((2, 1.960), (3, 2.343), (5, 2.728)):
        assert nemenyi_critical_difference(k, 6) == pytest.approx(q * math.sqrt(k * (k + 1) / 36), abs=2e-3)
    # A beats B beats C in 4 blocks: ranks 1, 2, 3; χ²_F = 12N/(k(k+1)) ΣR² - 3N(k+1) = 8
    rows = [{"density": b, "criterion": c, "test_acc": acc, "seed": s}
            for b in range(4) for s in range(2) for c, acc in zip("ABC", (0.9, 0.8 + 0.01 * s, 0.7), strict=True)]
    r = rank_methods(pd.DataFrame(rows), blocks=["density"])
    assert r.average_ranks.to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
    assert r.friedman_statistic == pytest.approx(8.0)
    assert r.friedman_p == pytest.approx(math.exp(-4))  # χ² with 2 dof
    assert r.critical_difference == pytest.approx(2.343 * math.sqrt(0.5), abs=1e-3)
    assert r.not_different() == [("A", "B"), ("B", "C")]
