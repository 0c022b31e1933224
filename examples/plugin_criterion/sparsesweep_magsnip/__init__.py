"""`magsnip`: a pruning criterion between magnitude and SNIP, as a sparsesweep plugin.

Magnitude keeps the largest |θ|; SNIP keeps the largest |θ·∇θL|, the first-order change of
the loss when θ is removed. `magsnip` scores a weight by |θ| · |∇θL|^β: β = 0 is magnitude,
β = 1 is SNIP, and a β in between trusts the gradient (one batch's, noisy) only partly. The
lowest-scoring active weights are pruned, as for every criterion of dynamic sparse training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from trainables.plugins import Param, PluginAPI

SPARSESWEEP_PLUGIN_API = 1  # the plugin interface this package was written for


def magsnip_scores(weight: Tensor, grad: Tensor, active: Tensor, *,
                   generator: torch.Generator | None = None, beta: float = 0.5) -> Tensor:
    """|θ| · |∇θL|^β of every weight (β = 0: magnitude, β = 1: SNIP)."""
    return weight.abs() * grad.abs().pow(beta)


def register(api: PluginAPI) -> None:
    api.criterion("magsnip", magsnip_scores, needs_grad=True,
                  params={"beta": Param(float, 0.5, "exponent β of |∇θL| (0: magnitude, 1: SNIP)",
                                        ge=0, le=1)})
    api.space(Path(__file__).with_name("magsnip_digits.yaml"))
