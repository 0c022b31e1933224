"""Linear mode connectivity (Frankle et al. 2020a; understanding-imp.txt §2.1, §4.3).

Two trained networks θ_a, θ_b are evaluated on the straight line θ(α) = (1-α)θ_a + αθ_b at
`points` evenly spaced α in [0, 1] (20 in the paper), with BatchNorm statistics recomputed at
every point: stale statistics distort the barrier (rigl's interpolation skips them). The instability (error
barrier) is max_α E(α) - mean(E(0), E(1)).

Every floating tensor of the state is interpolated; integer buffers (BatchNorm's batch counter)
are taken from θ_a; boolean buffers (masks) are OR-ed, so between successive IMP rounds
(m_b ⊂ m_a) the path lives on the larger mask, where θ_b is zero outside m_b.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["instability", "interpolate_state", "interpolation_errors"]


def interpolate_state(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """(1-α)·a + α·b for floating tensors; masks OR-ed; other integer buffers from a."""
    out = {}
    for name, ta in a.items():
        tb = b[name].to(ta.device)
        if ta.dtype == torch.bool:
            out[name] = ta | tb
        elif ta.is_floating_point():
            out[name] = torch.lerp(ta, tb.to(ta.dtype), alpha) if 0 < alpha < 1 else (ta if alpha == 0 else tb).clone()
        else:
            out[name] = ta.clone()
    return out


def interpolation_errors(model: nn.Module, a: Mapping[str, Tensor], b: Mapping[str, Tensor], *,
                         evaluate: Callable[[nn.Module], dict[str, float]],
                         recompute_bn: Callable[[nn.Module], None], points: int = 20) -> list[tuple[float, float]]:
    """[(α, test error)] on `points` evenly spaced α; `model` is restored afterwards."""
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    out = []
    try:
        for i in range(points):
            alpha = i / (points - 1)
            model.load_state_dict(interpolate_state(a, b, alpha))
            recompute_bn(model)
            out.append((alpha, 1.0 - float(evaluate(model)["test_acc"])))
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    return out


def instability(errors: Sequence[float]) -> float:
    """max_α E(α) - (E(0) + E(1))/2, the error barrier on the path (≥ 0 when E(0), E(1) are the ends)."""
    if len(errors) < 2:
        raise ValueError(f"need the errors of at least the two endpoints, got {len(errors)}")
    return max(errors) - (errors[0] + errors[-1]) / 2
