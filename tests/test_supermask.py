"""Supermask layers: exact top-k counts, |score| ranking, straight-through gradients, caching."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trainables.sparse.supermask import (
    SUPERMASK,
    StraightThrough,
    SupermaskConv2d,
    SupermaskLinear,
    supermask_modules,
    topk_mask,
)


def _tiny(k: float = 0.5) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        SupermaskConv2d(3, 5, 3, padding=1, prune_rate=k),  # 135 weights (odd)
        nn.BatchNorm2d(5, affine=False),
        nn.ReLU(),
        nn.Flatten(),
        SupermaskLinear(5 * 4 * 4, 7, prune_rate=k),  # 560 weights
    )


# ----- exact counts ----------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 135, 1001])
@pytest.mark.parametrize("k", [0.0, 0.1, 0.29, 0.5, 0.7, 0.9])
def test_topk_mask_keeps_exact_count(n: int, k: float) -> None:
    keep = n - math.floor(round(k * n, 9))
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n))
    for s in (scores, torch.zeros(n), torch.ones(n)):  # random, all tied at 0, all tied at 1
        assert int(topk_mask(s, keep).sum()) == keep


@pytest.mark.parametrize("n", [2, 7, 135, 1001])
def test_keep_all_but_one_drops_exactly_the_smallest(n: int) -> None:
    """keep = n - 1: the "smallest" branch with a single entry to drop."""
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n)) + 0.01
    smallest = int(scores.abs().argmin())
    scores[smallest] = -1e-6  # by |score|, whatever its sign
    mask = topk_mask(scores, n - 1)
    assert int(mask.sum()) == n - 1 and not bool(mask[smallest])
    k = round(1.5 / n, 7)  # k n = 1.5 (to 7 decimals): n - floor(k n) = n - 1
    layer = SupermaskLinear(n, 1, prune_rate=k)
    assert int(layer.current_mask().sum()) == n - 1


def test_ties_at_threshold_add_no_extras() -> None:
    # |s| = 3, 2, 2, 2, 2, 1: keeping 3 must take the 3 and exactly two of the four 2s;
    # a ">= kth value" test would keep 5.
    s = torch.tensor([3.0, 2.0, -2.0, 2.0, -2.0, 1.0])
    m = topk_mask(s, 3)
    assert int(m.sum()) == 3
    assert bool(m[0]) and not bool(m[5])
    assert int(m[1:5].sum()) == 2
    # Same from the other side (keep > n/2 goes through the "smallest" branch).
    m = topk_mask(s, 4)
    assert int(m.sum()) == 4 and bool(m[0]) and not bool(m[5])


def test_selection_by_absolute_score_hand_case() -> None:
    # |s| = [[0.1, 5, 0.3], [4, 0.2, 0.6]] -> the 3 largest are 5, 4, 0.6.
    s = torch.tensor([[0.1, -5.0, 0.3], [4.0, -0.2, -0.6]])
    expected = torch.tensor([[False, True, False], [True, False, True]])
    assert torch.equal(topk_mask(s, 3), expected)
    layer = SupermaskLinear(3, 2, prune_rate=0.5)  # keeps 6 - floor(3) = 3
    with torch.no_grad():
        layer.scores.copy_(s)
    assert torch.equal(layer.current_mask(), expected)


@pytest.mark.parametrize("k", [0.2, 0.5, 0.7])
def test_layers_keep_ceil_of_density(k: float) -> None:
    model = _tiny(k)
    for name, layer in supermask_modules(model).items():
        n = layer.weight.numel()
        assert int(layer.current_mask().sum()) == math.ceil(round((1 - k) * n, 9)), name
        with torch.no_grad():
            layer.scores.zero_()  # all tied
        assert int(layer.current_mask().sum()) == math.ceil(round((1 - k) * n, 9)), name


def test_effective_weight_is_masked_weight() -> None:
    layer = SupermaskLinear(4, 3, prune_rate=0.5)
    w_eff = layer.masked_weight()
    assert torch.equal(w_eff, layer.weight * layer.current_mask())
    x = torch.randn(2, 4)
    assert torch.allclose(layer(x), x @ w_eff.T)


# ----- gradients -----------------------------------------------------------------------

def test_straight_through_is_identity() -> None:
    s = torch.randn(5, requires_grad=True)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    out = StraightThrough.apply(s, mask)
    assert torch.equal(out, mask)
    g = torch.randn(5)
    out.backward(g)
    assert torch.equal(s.grad, g)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_gradient_reaches_unselected_scores(kind: str) -> None:
    torch.manual_seed(1)
    if kind == "linear":
        layer: nn.Module = SupermaskLinear(6, 4, prune_rate=0.7)
        x = torch.randn(8, 6)
    else:
        layer = SupermaskConv2d(2, 3, 3, padding=1, prune_rate=0.7)
        x = torch.randn(4, 2, 5, 5)
    w_eff = layer.masked_weight()
    w_eff.retain_grad()
    y = layer._conv_forward(x, w_eff, None) if kind == "conv" else x @ w_eff.T
    y.pow(2).sum().backward()
    mask = layer.current_mask()
    # dL/ds = dL/dw_eff * w * sign(s): the estimator passes the gradient of |s| unchanged.
    expected = w_eff.grad * layer.weight * layer.scores.detach().sign()
    assert torch.allclose(layer.scores.grad, expected)
    unselected = layer.scores.grad[~mask]
    assert unselected.numel() > 0 and bool((unselected != 0).all())
    assert layer.weight.grad is None and not layer.weight.requires_grad


def test_gradient_equals_dl_dweff_times_weight_for_positive_scores() -> None:
    layer = SupermaskLinear(3, 2, prune_rate=0.5)
    with torch.no_grad():
        layer.scores.copy_(torch.tensor([[0.1, 5.0, 0.3], [4.0, 0.2, 0.6]]))
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    layer(x).sum().backward()
    # L = sum_j sum_i w_eff[j, i] x_i, so dL/dw_eff[j, i] = x_i for every (j, i).
    expected = x.expand(2, 3) * layer.weight
    assert torch.equal(layer.scores.grad, expected)
    assert layer.scores.grad[0, 0] == 1.0  # (0, 0) is unselected: |0.1| is the smallest


def test_weights_frozen_and_bias_refused() -> None:
    model = _tiny()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.scores", "4.scores"}
    with pytest.raises(ValueError):
        SupermaskLinear(3, 2, bias=True)
    with pytest.raises(ValueError):
        SupermaskConv2d(3, 2, 3, bias=True)


def test_factory_refuses_bias_and_uses_non_affine_bn() -> None:
    conv = SUPERMASK.conv(3, 4, 3, padding=1, bias=True)
    lin = SUPERMASK.linear(4, 2, bias=True)
    bn = SUPERMASK.norm(4)
    assert isinstance(conv, SupermaskConv2d) and conv.bias is None
    assert isinstance(lin, SupermaskLinear) and lin.bias is None
    assert isinstance(bn, nn.BatchNorm2d) and not bn.affine and list(bn.parameters()) == []


def test_mask_names() -> None:
    model = nn.Sequential(_tiny(), nn.Sequential(nn.ReLU(), SupermaskLinear(7, 2)))
    assert list(supermask_modules(model)) == ["0.0.weight", "0.4.weight", "1.1.weight"]


# ----- caching ---------------------------------------------------------------------------


@pytest.mark.parametrize("opt_kwargs", [{"foreach": False}, {"foreach": True}, {"fused": True}])
def test_cache_reused_until_optimizer_step(count_selections: list[int],
                                           opt_kwargs: dict[str, bool]) -> None:
    layer = SupermaskConv2d(2, 3, 3, padding=1, prune_rate=0.5)
    opt = torch.optim.SGD([layer.scores], lr=10.0, **opt_kwargs)
    x = torch.randn(2, 2, 5, 5)
    layer(x).pow(2).sum().backward()
    first = layer.current_mask()
    layer(x).pow(2).sum().backward()  # second forward, no step: cache hit
    with torch.no_grad():
        layer(x)
    assert count_selections[0] == 1
    assert layer.current_mask() is first
    opt.step()  # fused optimizers do not bump _version: the step hook invalidates instead
    layer(x)
    layer(x)
    assert count_selections[0] == 2
    assert layer.current_mask() is not first


def test_cache_invalidated_by_in_place_edit_prune_rate_and_load(count_selections: list[int]) -> None:
    layer = SupermaskLinear(6, 4, prune_rate=0.5)
    layer.current_mask()
    with torch.no_grad():
        layer.scores.mul_(-1.0)  # bumps _version; ranking by |s| unchanged but recomputed
    layer.current_mask()
    assert count_selections[0] == 2
    layer.prune_rate = 0.75
    assert int(layer.current_mask().sum()) == 24 - 18
    layer.load_state_dict({"weight": layer.weight.clone(), "scores": torch.randn(4, 6)})
    layer.current_mask()
    assert count_selections[0] == 4
    layer.scores.data.mul_(2.0)  # bypasses the version counter: explicit invalidation
    layer.invalidate_mask()
    layer.current_mask()
    assert count_selections[0] == 5


def test_mask_cached_under_inference_mode_works_for_training() -> None:
    layer = SupermaskLinear(6, 4)
    x = torch.randn(3, 6)
    with torch.inference_mode():
        layer(x)
    layer(x).sum().backward()
    assert layer.scores.grad is not None


def test_deepcopy_and_dtype_move_recompute(count_selections: list[int]) -> None:
    layer = SupermaskLinear(6, 4)
    m = layer.current_mask()
    clone = copy.deepcopy(layer)
    assert clone._cached_bool is None
    assert torch.equal(clone.current_mask(), m)
    assert count_selections[0] == 2  # the clone selected its own
    layer.double()  # new storage and dtype, same Parameter, no version bump
    assert layer.masked_weight().dtype == torch.float64
    assert count_selections[0] == 3, "a dtype move must recompute the mask"
    assert layer.coat_depth().dtype == torch.float64  # not a float32 mask promoted on the fly
    assert layer._cached_weight.dtype == torch.float64
    layer.scores.data = layer.scores.data.clone()  # same dtype and version, new data pointer
    layer.current_mask()
    assert count_selections[0] == 4, "new score storage must recompute the mask"


@pytest.mark.parametrize("coats", [1, 3])
def test_fused_masked_weight_matches_the_unfused_chain_bit_for_bit(coats: int) -> None:
    """MaskedWeight (cached θ0⊙m, one node) = θ0 * StraightThrough(|s|, m): forward and scores' grad."""
    torch.manual_seed(3)
    layer = SupermaskConv2d(3, 5, 3, padding=1, prune_rate=0.6)
    layer.coat_rates = tuple(0.6 + 0.1 * i for i in range(coats))
    with torch.no_grad():
        layer.scores[0, 0, 0, 0] = 0.0  # sign(0) = 0: abs' backward gives 0 there too
    x = torch.randn(2, 3, 6, 6)
    g = torch.randn(2, 5, 6, 6)
    layer(x).backward(g)
    fused = layer.scores.grad.clone()
    layer.scores.grad = None
    w_ref = layer.weight * StraightThrough.apply(layer.scores.abs(), layer.coat_depth(), float(coats))
    assert torch.equal(w_ref, layer.masked_weight())
    layer._conv_forward(x, w_ref, None).backward(g)
    assert torch.equal(fused, layer.scores.grad)
    assert fused[0, 0, 0, 0] == 0


def test_coat_mask_equals_the_sorted_prefix_definition_without_ties() -> None:
    """Nested unsorted top-k (the fast path) = coat j as the top-keeps[j] prefix of one sorted ranking."""
    from trainables.sparse.supermask import coat_mask

    g = torch.Generator().manual_seed(5)
    scores = torch.randn(7, 5, 3, 3, generator=g)
    keeps = (200, 150, 90, 31)
    order = scores.abs().flatten().argsort(descending=True)
    ref = torch.zeros(scores.numel())
    for keep in keeps:
        ref[order[:keep]] += 1
    assert torch.equal(coat_mask(scores, keeps), ref.view(scores.shape))
    allowed = torch.rand(scores.shape, generator=g) < 0.8
    depth = coat_mask(scores, keeps, allowed)
    assert not bool(depth[~allowed].any()) and int((depth > 0).sum()) == keeps[0]


def test_band_selection_equals_topk_mask_step_after_step() -> None:
    """The CPU fast path (a band around the last threshold) always gives topk_mask's mask:
    along drifting scores, with a search space, under ties, with NaN and with a stale hint."""
    from trainables.sparse.supermask import band_topk_mask

    g = torch.Generator().manual_seed(11)
    layer = SupermaskConv2d(8, 16, 3, prune_rate=0.6)
    hits = 0
    for step in range(12):
        with torch.no_grad():
            layer.scores.add_(0.01 * torch.randn(layer.scores.shape, generator=g))
            if step == 6:
                layer.set_allowed(torch.rand(layer.weight.shape, generator=g) < 0.8)
        hits += getattr(layer, "_sel_hint", None) is not None
        assert torch.equal(layer.current_mask(), topk_mask(layer.scores, layer.keep_count(), layer.allowed))
    assert hits >= 10
    s = torch.randn(1000, generator=g)
    keep = 400
    exact = topk_mask(s, keep)
    v = float(s.abs()[exact].min())
    found = band_topk_mask(s, keep, v * 1.001, 0.01)
    assert found is not None and torch.equal(found[0], exact) and found[1] == v
    assert band_topk_mask(s, keep, v * 3, 0.01) is None  # the band misses the threshold
    tied = torch.ones(1000)
    assert band_topk_mask(tied, keep, 1.0, 0.01) is None  # not unique: topk_mask decides
    s[3] = float("nan")
    assert band_topk_mask(s, keep, v, 0.01) is None


# ----- multicoat selection without top-k (fast_coat_mask) ---------------------------------


def _nested_topk_reference(scores: torch.Tensor, keeps: tuple[int, ...],
                           allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i topk_mask(scores, keeps[i]): the plain definition (it nests when no key ties)."""
    return sum((topk_mask(scores, k, allowed).to(scores.dtype) for k in keeps), torch.zeros_like(scores))


def _keep_sets(n: int) -> list[tuple[int, ...]]:
    from trainables.sparse.density import kept_count

    spanned = tuple(kept_count(n, 0.5 + 0.125 * j) for j in range(4))  # the benchmark's N = 4
    sets = [spanned, (n, n, n, n), (0, 0, 0, 0), (n, n // 2, 1, 0), (n, n - 1, 1, 1), (n - 1,), (1,),
            (n, 0), (n // 3, n // 3, n // 5)]
    return [k for k in sets if list(k) == sorted(k, reverse=True)]  # (n = 1 drops one)


@pytest.mark.parametrize("n", [1, 2, 7, 135, 4096, 70001])
def test_fast_coat_mask_equals_coat_mask_and_the_topk_reference(n: int) -> None:
    """Distinct keys: the bucket search finds every threshold (no fallback) and gives exactly
    coat_mask's depth, which is the sum of plain topk masks; also inside a search space."""
    from trainables.sparse.supermask import coat_mask, fast_coat_mask

    g = torch.Generator().manual_seed(n)
    for pool in (torch.randn(4 * n, generator=g), torch.rand(4 * n, generator=g).mul(1e-3),
                 torch.randn(4 * n, generator=g).mul(1e30)):
        keys = pool.abs().unique()  # distinct keys: every top-k set is unique
        keys = keys[torch.randperm(keys.numel(), generator=g)[:n]]
        scores = torch.where(torch.rand(n, generator=g) < 0.5, keys, -keys)
        assert scores.abs().unique().numel() == n
        for keeps in _keep_sets(n):
            fast = fast_coat_mask(scores, keeps)
            assert fast is not None, (n, keeps)
            assert torch.equal(fast, coat_mask(scores, keeps)), (n, keeps)
            assert torch.equal(fast, _nested_topk_reference(scores, keeps)), (n, keeps)
        allowed = torch.rand(n, generator=g) < 0.7
        allowed[0] = True
        m = int(allowed.sum())
        for keeps in ((m, m // 2, m // 4), (max(m // 2, 1), 1, 0), (1,)):
            fast = fast_coat_mask(scores, keeps, allowed)
            assert fast is not None and torch.equal(fast, coat_mask(scores, keeps, allowed)), (n, keeps)
            assert torch.equal(fast, _nested_topk_reference(scores, keeps, allowed))
            assert not bool(fast[~allowed].any())


def test_fast_coat_mask_under_ties_is_coat_mask() -> None:
    """Keys tied at a threshold: coat_mask's nested top-k's decide up to the last tied coat
    (their tie break), the thresholds the rest; the depth is always coat_mask's. Ties away
    from every threshold, zeros, negative zeros, inf: exact too. NaN, float64, a crowded
    bucket: None (coat_mask decides)."""
    from trainables.sparse.selection import _radix_depth, coat_mask, fast_coat_mask

    g = torch.Generator().manual_seed(2)
    tied = torch.randint(-6, 7, (5000,), generator=g).float()  # 7 distinct keys 0..6, ~770 each
    n = tied.numel()
    seen_tied = 0
    for keeps in _keep_sets(n) + [(int((tied.abs() >= 4).sum()), int((tied.abs() >= 6).sum()))]:
        fast = fast_coat_mask(tied, keeps)
        assert fast is not None and torch.equal(fast, coat_mask(tied, keeps)), keeps
        found = _radix_depth(tied.abs(), keeps, False, tied.dtype)
        seen_tied += found is not None and any(found[2])
    assert seen_tied >= 3
    # one tie at a time at each coat's threshold (and at two), among distinct keys
    n = 70001
    pool = torch.randn(4 * n, generator=g).abs().unique()
    keys = pool[torch.randperm(pool.numel(), generator=g)[:n]]
    keeps = (35001, 26251, 17501, 8751)
    order = keys.argsort(descending=True)
    for at in ((0,), (1,), (2,), (3,), (0, 2), (1, 3)):
        k = keys.clone()
        for i in at:
            k[order[keeps[i]]] = k[order[keeps[i] - 1]]  # the (keep+1)-th key = the keep-th
        scores = torch.where(torch.rand(n, generator=g) < 0.5, k, -k)
        found = _radix_depth(k, keeps, False, k.dtype)
        assert found is not None and found[2] == [i in at for i in range(4)], at
        fast = fast_coat_mask(scores, keeps)
        assert fast is not None and torch.equal(fast, coat_mask(scores, keeps)), at
        allowed = torch.ones(n, dtype=torch.bool)
        allowed[order[-5:]] = False  # outside the search space: the smallest keys
        fast = fast_coat_mask(scores, keeps, allowed)
        assert fast is not None and torch.equal(fast, coat_mask(scores, keeps, allowed)), at
    s = torch.randn(3000, generator=g)
    s[:500] = 0.0
    s[500:1000] = -0.0
    s[1000:1010] = float("inf")
    s[1010:1020] = -float("inf")
    s[1500:1900] = 0.25  # a tie group: coat 1 takes all of it, coat 2 none
    keeps = (int((s.abs() >= 0.25).sum()), int((s.abs() > 0.25).sum()), 1020, 20)  # 20: the infs
    fast = fast_coat_mask(s, keeps)
    assert fast is not None and torch.equal(fast, coat_mask(s, keeps))
    assert torch.equal(fast, _nested_topk_reference(s, keeps))
    for keeps in ((2500, 10), (2000, 10), (2500, 2000, 1900, 1700)):  # ties among 0, inf, 0.25
        fast = fast_coat_mask(s, keeps)
        assert fast is not None and torch.equal(fast, coat_mask(s, keeps)), keeps
    nan = torch.randn(100, generator=g)
    nan[7] = float("nan")
    assert fast_coat_mask(nan, (50, 10)) is None
    assert fast_coat_mask(torch.randn(100, generator=g).double(), (50, 10)) is None
    crowded = 1.0 + torch.rand(100000, generator=g) * 1e-4  # all keys in one bucket of 2^-7
    assert fast_coat_mask(crowded, (50000, 1000)) is None


def test_multicoat_layer_uses_the_fast_path_and_matches_coat_mask_step_after_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4-coat layer along drifting scores (and with a search space): its depth is coat_mask's
    every step, and the selection never fell back to coat_mask (no ties in random scores)."""
    import trainables.sparse.supermask as sm

    fallbacks = [0]
    real = sm.coat_mask

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        fallbacks[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(sm, "coat_mask", counting)
    g = torch.Generator().manual_seed(4)
    layer = SupermaskConv2d(48, 48, 3, prune_rate=0.5)  # 20736 weights: at least FAST_COATS_MIN
    assert layer.scores.numel() >= sm.FAST_COATS_MIN
    layer.coat_rates = (0.5, 0.625, 0.75, 0.875)
    n = layer.scores.numel()
    keeps = tuple(n - math.floor(k * n) for k in layer.coat_rates)
    for step in range(8):
        with torch.no_grad():
            layer.scores.add_(0.01 * torch.randn(layer.scores.shape, generator=g))
            if step == 4:
                layer.set_allowed(torch.rand(layer.weight.shape, generator=g) < 0.8)
        depth = layer.coat_depth()
        assert torch.equal(depth, real(layer.scores, keeps, layer.allowed))
        assert torch.equal(layer.current_mask(), depth > 0)
        assert torch.equal(layer.masked_weight(), layer.weight * depth)
    assert fallbacks[0] == 0
