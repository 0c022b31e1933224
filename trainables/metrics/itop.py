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
from trainables.sparse.bits import PackedBits

__all__ = ["itop_ratio", "record_masks"]


def itop_ratio(ever_active: Mapping[str, Tensor] | Mapping[str, PackedBits]) -> float:
    """Fraction of all weights ever active (1 - dying ratio), over all layers together."""
    return 1.0 - dying_ratio(ever_active)


def record_masks(ever_active: dict[str, PackedBits], masks: Mapping[str, Tensor]) -> None:
    """OR `masks` into the history in place, kept bit-packed (1 bit per weight); a new layer
    starts with its mask, and a bool tensor found there (an old checkpoint's) is packed."""
    for name, mask in masks.items():
        past = ever_active.get(name)
        if past is None:
            ever_active[name] = PackedBits.of(mask.detach().to(torch.bool))
            continue
        if past.shape != mask.shape:
            raise ValueError(f"history of {name} has shape {tuple(past.shape)}, the mask "
                             f"{tuple(mask.shape)}")
        if not isinstance(past, PackedBits):
            past = PackedBits.of(past.to(torch.bool))
        ever_active[name] = past.to(mask.device).or_(mask.detach().to(torch.bool))
