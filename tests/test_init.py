"""Weight and score inits, against hand-computed constants."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.sparse.init import (
    fan_in,
    init_scores,
    init_weight,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_fan_in() -> None:
    assert fan_in(torch.empty(4, 3, 2, 2)) == 12
    assert fan_in(torch.empty(5, 7)) == 7


def test_signed_constant_one_magnitude_hand_computed() -> None:
    # Conv weight 64 x 3 x 2 x 2: fan_in = 3*2*2 = 12, constant = sqrt(2)/sqrt(12) = 1/sqrt(6).
    w = torch.empty(64, 3, 2, 2)
    init_weight(w, "signed_constant", generator=_gen())
    magnitudes = w.abs().unique()
    assert magnitudes.numel() == 1
    assert math.isclose(float(magnitudes[0]), 1 / math.sqrt(6), rel_tol=1e-6)
    positive = float((w > 0).float().mean())
    assert 0.4 < positive < 0.6  # 768 fair signs


def test_signed_constant_has_no_zeros_even_if_the_draw_has_some(monkeypatch: pytest.MonkeyPatch) -> None:
    w = torch.empty(4, 3)
    monkeypatch.setattr(torch.nn.init, "kaiming_normal_", lambda t, **kw: t.zero_())
    init_weight(w, "signed_constant")
    assert torch.equal(w, torch.full((4, 3), math.sqrt(2) / math.sqrt(3)))


@pytest.mark.parametrize("k", [0.0, 0.5, 0.75])
def test_scaled_signed_constant_divides_by_sqrt_density(k: float) -> None:
    plain, scaled = torch.empty(8, 5), torch.empty(8, 5)
    init_weight(plain, "signed_constant", generator=_gen(3))
    init_weight(scaled, "scaled_signed_constant", prune_rate=k, generator=_gen(3))
    # density = 1 - k is the KEPT fraction: k = 0.75 keeps 1/4, so the constant doubles.
    assert torch.allclose(scaled, plain / math.sqrt(1 - k))
    if k == 0.75:
        assert math.isclose(float(scaled.abs().max()), 2 * math.sqrt(2 / 5), rel_tol=1e-6)


def test_kaiming_weight_inits_have_relu_scale() -> None:
    w = torch.empty(400, 50)  # fan_in 50: std sqrt(2/50) = 0.2, uniform bound sqrt(6/50)
    init_weight(w, "kaiming_normal", generator=_gen())
    assert abs(float(w.std()) - 0.2) < 0.01
    init_weight(w, "kaiming_uniform", generator=_gen())
    bound = math.sqrt(6 / 50)
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.98 * bound


def test_score_kaiming_uniform_bound_is_one_over_sqrt_fan_in() -> None:
    # gain(a=sqrt 5) = sqrt(2/(1+5)) = sqrt(1/3); bound = gain * sqrt(3/fan_in) = 1/sqrt(fan_in).
    s = torch.empty(200, 3, 3, 3)  # fan_in 27
    init_scores(s, "kaiming_uniform", generator=_gen())
    bound = 1 / math.sqrt(27)
    assert float(s.abs().max()) <= bound and float(s.abs().max()) > 0.99 * bound
    assert float(s.min()) < 0 < float(s.max())


def test_score_kaiming_normal() -> None:
    s = torch.empty(500, 20)  # std sqrt(2/20)
    init_scores(s, "kaiming_normal", generator=_gen())
    assert abs(float(s.std()) - math.sqrt(0.1)) < 0.01


def test_generator_makes_it_reproducible_and_unknown_names_fail() -> None:
    a, b = torch.empty(6, 4), torch.empty(6, 4)
    init_weight(a, "signed_constant", generator=_gen(7))
    init_weight(b, "signed_constant", generator=_gen(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        init_weight(a, "xavier")
    with pytest.raises(ValueError):
        init_scores(a, "zeros")
