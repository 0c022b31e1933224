"""IMP's formulas against small hand-computed cases (understanding-imp.txt §2-4, appendix B):
⌈p·remaining⌉ pruning and its threshold, one-shot counts, the repellent loss J_r and the sign of
its gradient, angular / cosine / Euclidean distances on shared weights, linear interpolation and
the instability, surviving-weight histograms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.metrics.distances import (
    angular_distance,
    cosine_distance,
    distance_matrix,
    distance_row,
    distance_table,
    euclidean_distance,
    shared_vectors,
)
from trainables.metrics.histograms import weight_histogram
from trainables.metrics.interpolation import instability, interpolate_state, interpolation_errors
from trainables.sparse.imp_prune import imp_prune, one_shot_prune, removed_count
from trainables.sparse.repel import RepellentTerm, repellent_loss

# ----- pruning -------------------------------------------------------------------------------


def test_removed_count_is_ceil_of_p_times_remaining_in_decimal() -> None:
    assert removed_count(100, 0.2) == 20
    assert removed_count(15, 0.2) == 3
    assert removed_count(100, 0.55) == 55  # 0.55 * 100 = 55.00000000000001 in binary floats: ceil gives 56
    assert removed_count(7, 0.2) == 2  # 1.4 -> 2 (open_lth's ceil)
    assert removed_count(80, 0.2) == 16
    assert removed_count(1, 0.2) == 1


def test_global_round_removes_the_smallest_survivors_by_hand() -> None:
    a = torch.tensor([[0.5, -0.1], [0.3, 0.05]])
    b = torch.tensor([-0.2, 0.4, 0.01, 0.9, -0.6, 0.7])
    masks = {"a": torch.ones(2, 2, dtype=torch.bool), "b": torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)}
    # survivors: 4 + 5 = 9, remove ceil(1.8) = 2 of them: 0.05 (a) and 0.1 (a); 0.01 was pruned before
    out = imp_prune({"a": a, "b": b}, masks, 0.2)
    assert out.masks["a"].tolist() == [[True, False], [True, False]]
    assert out.masks["b"].tolist() == [True, True, False, True, True, True]
    assert out.threshold == pytest.approx(0.1)


def test_layerwise_round_prunes_each_layer_by_its_own_count() -> None:
    a = torch.tensor([0.5, -0.1, 0.3, 0.05, 0.2])  # remove ceil(1.0) = 1: 0.05
    b = torch.tensor([-0.2, 0.4, 0.01, 0.9, -0.6, 0.7, 0.8, 0.02, 0.03, 1.0, 1.1])  # ceil(2.2) = 3
    masks = {"a": torch.ones(5, dtype=torch.bool), "b": torch.ones(11, dtype=torch.bool)}
    out = imp_prune({"a": a, "b": b}, masks, 0.2, scope="layerwise")
    assert out.masks["a"].tolist() == [True, True, True, False, True]
    assert (~out.masks["b"]).nonzero().flatten().tolist() == [2, 7, 8]
    assert out.threshold == pytest.approx(0.05)  # the largest |θ| removed in any layer


def test_layerwise_rounds_count_from_each_layers_survivors_not_its_size() -> None:
    # a: 10 weights, 5 already pruned (odd indices); b: 6 weights, index 0 pruned
    a = torch.tensor([0.9, -0.1, 0.8, 0.05, 0.7, 0.3, -0.6, 0.02, 0.4, 0.5])
    b = torch.tensor([0.15, -0.25, 0.35, 0.45, -0.55, 0.65])
    masks = {"a": torch.tensor([1, 0] * 5, dtype=torch.bool),
             "b": torch.tensor([0, 1, 1, 1, 1, 1], dtype=torch.bool)}
    # round 1: a has 5 survivors, remove ceil(1.0) = 1 (|0.4|, index 8); counting from the
    # layer size would remove ceil(2.0) = 2. b has 5 survivors: 1 (|-0.25|, index 1), not ceil(1.2) = 2
    r1 = imp_prune({"a": a, "b": b}, masks, 0.2, scope="layerwise")
    assert (~r1.masks["a"]).nonzero().flatten().tolist() == [1, 3, 5, 7, 8, 9]
    assert (~r1.masks["b"]).nonzero().flatten().tolist() == [0, 1]
    assert r1.threshold == pytest.approx(0.4)
    # round 2: 4 survivors in each layer, remove ceil(0.8) = 1: |-0.6| (a, 6) and |0.35| (b, 2)
    r2 = imp_prune({"a": a, "b": b}, r1.masks, 0.2, scope="layerwise")
    assert r2.masks["a"].tolist() == [True, False, True, False, True, False, False, False, False, False]
    assert r2.masks["b"].tolist() == [False, False, False, True, True, True]
    assert r2.threshold == pytest.approx(0.6)


def test_rounds_remove_exactly_20_percent_of_the_remaining_under_ties() -> None:
    torch.manual_seed(0)
    w = {"a": torch.randn(40, 25).round(decimals=1), "b": torch.randn(100).round(decimals=1)}  # many ties
    masks = {n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()}
    remaining = 1100
    for _ in range(6):
        out = imp_prune(w, masks, 0.2)
        kept = sum(int(m.sum()) for m in out.masks.values())
        assert kept == remaining - math.ceil(0.2 * remaining - 1e-9)
        for n in w:
            assert not (out.masks[n] & ~masks[n]).any(), "a pruned weight came back"
        masks, remaining = out.masks, kept


def test_one_shot_prunes_to_the_target_sparsity() -> None:
    w = {"a": torch.arange(1.0, 11.0), "b": -torch.arange(11.0, 21.0)}
    masks = {n: torch.ones(10, dtype=torch.bool) for n in w}
    out = one_shot_prune(w, masks, 0.3)  # 20 weights, remove floor(6) = 6: |θ| 1..6
    assert out.masks["a"].tolist() == [False] * 6 + [True] * 4 and out.masks["b"].all()
    assert out.threshold == 6.0


# ----- repellent loss J_r --------------------------------------------------------------------


def test_repellent_loss_is_zero_for_orthogonal_and_lambda_for_identical() -> None:
    theta = torch.tensor([1.0, 2.0, 0.0, 0.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    orth = torch.tensor([-2.0, 1.0, 0.0, 5.0])  # orthogonal on the mask (5 is masked out)
    assert float(repellent_loss(theta, [orth], mask, 2.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(repellent_loss(theta, [3 * theta], mask, 2.0)) == pytest.approx(2.0)
    # two optima: the mean of cos² (0 and 1) times λ; cos² of a 45° vector is 1/2
    assert float(repellent_loss(theta, [orth, theta], mask, 2.0)) == pytest.approx(1.0)
    diag = torch.tensor([1.0, 0.0, 0.0, 0.0])
    v = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert float(repellent_loss(v, [diag], mask, 3.0)) == pytest.approx(1.5)


def test_fast_term_equals_the_formula() -> None:
    torch.manual_seed(1)
    x = torch.randn(30)
    optima = [torch.randn(30) for _ in range(4)]
    ones = torch.ones(30)
    term = RepellentTerm(optima, 2.0, torch.device("cpu"))
    assert float(term(x)) == pytest.approx(float(repellent_loss(x, optima, ones, 2.0)), rel=1e-5)


@pytest.mark.parametrize("lam", [2.0, -1.0])
def test_gradient_repels_for_positive_and_attracts_for_negative_lambda(lam: float) -> None:
    optimum = torch.tensor([1.0, 0.0, 0.0])
    x = torch.tensor([0.6, 0.8, 0.0], requires_grad=True)  # cos = 0.6
    loss = RepellentTerm([optimum], lam, torch.device("cpu"))(x)
    loss.backward()
    with torch.no_grad():
        stepped = x - 0.01 * x.grad
    cos_after = float(stepped[0] / stepped.norm())
    # a gradient-descent step moves away from the optimum for λ > 0, towards it for λ < 0
    assert (cos_after < 0.6) if lam > 0 else (cos_after > 0.6)
    assert float(x.grad[0]) * lam > 0  # ∂J/∂x_0 has λ's sign at cos > 0


# ----- distances ------------------------------------------------------------------------------


def test_angular_distance_by_hand() -> None:
    v = torch.tensor([1.0, 2.0, -3.0])
    assert angular_distance(v, v) == pytest.approx(0.0, abs=1e-6)
    assert angular_distance(v, 5 * v) == pytest.approx(0.0, abs=1e-6)
    assert angular_distance(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == pytest.approx(1.0)
    # 60°: 2·(π/3)/π = 2/3; cosine distance 1 - 1/2; Euclidean |(1,0)-(1/2,√3/2)| = 1
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.5, math.sqrt(3) / 2])
    assert angular_distance(a, b) == pytest.approx(2 / 3)
    assert cosine_distance(a, b) == pytest.approx(0.5)
    assert euclidean_distance(a, b) == pytest.approx(1.0)


def test_shared_vectors_use_the_intersection_of_the_masks() -> None:
    a = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    b = {"w": torch.tensor([9.0, 0.0, 3.0, 4.0])}
    ma = {"w": torch.tensor([True, True, True, True])}
    mb = {"w": torch.tensor([False, False, True, True])}
    x, y = shared_vectors(a, b, ma, mb)
    assert x.tolist() == [3.0, 4.0] and y.tolist() == [3.0, 4.0]
    assert angular_distance(x, y) == pytest.approx(0.0, abs=1e-6)


def test_distance_matrix_puts_init_last_and_mirrors() -> None:
    rows = [{"kind": "imp", "a": "r01", "b": "init", "angular": 0.9, "cosine": 0.1, "euclidean": 1.0},
            {"kind": "imp", "a": "r01", "b": "r02", "angular": 0.2, "cosine": 0.1, "euclidean": 1.0},
            {"kind": "reinit", "a": "r02", "b": "init", "angular": 0.7, "cosine": 0.1, "euclidean": 1.0}]
    labels, m = distance_matrix(distance_table(rows), "imp")
    assert labels == ["r01", "r02", "init"]
    assert m[0, 1] == m[1, 0] == 0.2 and m[0, 2] == 0.9 and math.isnan(m[1, 2]) and m[2, 2] == 0
    assert distance_row("imp", "r01", "r02", torch.ones(2), torch.ones(2))["angular"] == pytest.approx(0, abs=1e-6)


# ----- interpolation -----------------------------------------------------------------------------


def test_instability_is_max_over_endpoint_mean() -> None:
    assert instability([0.1, 0.3, 0.25, 0.2]) == pytest.approx(0.3 - 0.15)
    assert instability([0.2, 0.1, 0.2]) == pytest.approx(0.0)  # never below 0 with the ends in the list


def test_interpolate_state_lerps_floats_ors_masks_keeps_counters() -> None:
    a = {"w": torch.tensor([0.0, 2.0]), "mask": torch.tensor([True, False]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 0.0]), "mask": torch.tensor([False, False]), "n": torch.tensor(7)}
    out = interpolate_state(a, b, 0.25)
    assert out["w"].tolist() == [1.0, 1.5] and out["mask"].tolist() == [True, False] and int(out["n"]) == 3


def _net(seed: int, bn: bool) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(4, 8)]
    if bn:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.ReLU(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("bn", [False, True])
def test_interpolation_ends_reproduce_each_endpoint_error(bn: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    xb = torch.randn(32, 4, generator=g)

    def recompute(m: nn.Module) -> None:
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.reset_running_stats()
                mod.momentum = None
        m.train()
        with torch.no_grad():
            m(xb)
        m.eval()

    def evaluate(m: nn.Module) -> dict[str, float]:
        m.eval()
        with torch.no_grad():
            return {"test_acc": float((m(x).argmax(1) == y).float().mean())}

    net_a, net_b = _net(1, bn), _net(2, bn)
    for n in (net_a, net_b):
        recompute(n)
    ends = [1 - evaluate(net_a)["test_acc"], 1 - evaluate(net_b)["test_acc"]]
    a, b = net_a.state_dict(), net_b.state_dict()
    model = _net(3, bn)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    errors = interpolation_errors(model, a, b, evaluate=evaluate, recompute_bn=recompute, points=5)
    assert [alpha for alpha, _ in errors] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert errors[0][1] == ends[0] and errors[-1][1] == ends[1]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "model not restored"


# ----- histograms --------------------------------------------------------------------------------


def test_histogram_counts_by_hand() -> None:
    t = weight_histogram(torch.tensor([-1.0, -0.6, 0.1, 0.2, 0.9, 1.0]), 4)
    assert t.column("count").to_pylist() == [2, 0, 2, 2]  # bins [-1,-.5) [-.5,0) [0,.5) [.5,1]
    assert t.column("left").to_pylist() == [-1.0, -0.5, 0.0, 0.5]
