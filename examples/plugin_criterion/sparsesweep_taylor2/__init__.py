"""A second-order Taylor pruning criterion for dynamic sparse training, as a sparsesweep plugin.

Removing weight θ changes the loss by ΔL ≈ -g·θ + ½·h·θ² (g = ∂L/∂θ, h the diagonal of the
Hessian). With the empirical Fisher h ≈ g² (Optimal Brain Damage with a Fisher Hessian), the
score of a weight is |-g·θ + ½·α·g²·θ²|: the weights whose removal changes the loss least are
pruned first. α = 0 is SNIP's |θ·g|; α weights the second-order term.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from trainables.plugins import Param, PluginAPI

SPARSESWEEP_PLUGIN_API = 1  # the plugin interface this package was written for


def taylor2_scores(weight: Tensor, grad: Tensor, active: Tensor, *,
                   generator: torch.Generator | None = None, alpha: float = 1.0) -> Tensor:
    """|-g·θ + ½·α·g²·θ²| of every weight; the lowest-scoring active weights are pruned."""
    first = -grad * weight
    second = 0.5 * alpha * (grad * weight) ** 2
    return (first + second).abs()


def register(api: PluginAPI) -> None:
    api.criterion("taylor2", taylor2_scores, needs_grad=True,
                  params={"alpha": Param(float, 1.0, "weight α of the second-order term (0: SNIP)", ge=0)})
    api.space(Path(__file__).with_name("taylor2_digits.yaml"))
