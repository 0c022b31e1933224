"""In-time over-parameterisation (ITOP, Liu et al. 2021; fantastic-weights-dst.txt appendix E).

ITOP ratio = weights active at least once so far / all maskable weights. It comes from the
same "ever active" history edge-popup keeps (an OR of every mask seen), so the dying ratio
d_t = 1 - ITOP of a DST run and d_t of an edge-popup run measure the same exploration.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from trainables.metrics.dying import dying_ratio

__all__ = ["itop_ratio", "record_masks"]


def itop_ratio(ever_active: Mapping[str, Tensor]) -> float:
    """Fraction of all weights ever active (1 - dying ratio), over all layers together."""
    return 1.0 - dying_ratio(ever_active)


def record_masks(ever_active: dict[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """OR `masks` into the history in place (a new layer starts with its mask)."""
    for name, mask in masks.items():
        past = ever_active.get(name)
        if past is None:
            ever_active[name] = mask.detach().to(torch.bool).clone()
        else:
            if past.shape != mask.shape:
                raise ValueError(f"history of {name} has shape {tuple(past.shape)}, the mask "
                                 f"{tuple(mask.shape)}")
            ever_active[name] = past.to(device=mask.device, dtype=torch.bool).logical_or_(mask.bool())
