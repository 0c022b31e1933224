"""The repellent loss of understanding-imp.txt §3:

    J_r(θ) = λ_r/|Θ| · Σ_{θ_r ∈ Θ} ( (θ⊙m)·(θ_r⊙m) / (‖θ⊙m‖ ‖θ_r⊙m‖) )²

the mean squared cosine similarity of the current (masked) weights to earlier optima Θ.
λ_r > 0 pushes training towards solutions orthogonal to the earlier optima; λ_r < 0 pulls
it towards them (Fig. 3 right).

Within a round the mask m is fixed, so each earlier optimum enters only through the unit
vector u_r = θ_r⊙m / ‖θ_r⊙m‖ restricted to the active entries: `RepellentTerm` stacks them
once per round (K × active weights, at most ~2× the model under 20% pruning per round, since
the active set shrinks as K grows) and each step costs one matrix-vector product:
J_r = λ_r/K · ‖U x‖² / ‖x‖², x = the active weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["RepellentTerm", "repellent_loss"]


def repellent_loss(theta: Tensor, optima: Sequence[Tensor], mask: Tensor, lam: float) -> Tensor:
    """J_r exactly as written, on flat tensors (the reference the fast form is tested against)."""
    if not optima:
        return theta.new_zeros(())
    x = theta * mask
    total = theta.new_zeros(())
    for opt in optima:
        y = opt.to(theta) * mask
        if float(y.norm()) == 0:  # an optimum with nothing on the mask: no direction, no term
            continue
        total = total + (torch.dot(x, y) / (x.norm() * y.norm())) ** 2
    return lam / len(optima) * total


class RepellentTerm:
    """J_r for one round: the earlier optima, projected on the round's mask, as unit rows."""

    def __init__(self, optima_active: Sequence[Tensor], lam: float, device: torch.device) -> None:
        rows = [o / o.norm() for o in optima_active if float(o.norm()) > 0]
        self.count = len(optima_active)
        self.lam = lam
        self.device = device
        self.units = torch.stack(rows).to(device) if rows else None

    def __call__(self, active: Tensor) -> Tensor:
        """J_r of the active weights `active` (a differentiable flat vector)."""
        if self.units is None or self.count == 0:
            return active.new_zeros(())
        x = active.to(self.device)
        cos = self.units.to(x.dtype) @ x / x.norm()
        return (self.lam / self.count * (cos ** 2).sum()).to(active.device)
