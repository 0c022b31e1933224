"""Visit counts: how many optimizer steps each edge was selected (soft-iep-appendix C.3.3).

Fig. 17 sorts edges into buckets by their visit count (never, once, twice, ..., five times,
more) and plots EP's bucket sizes over soft iEP's. A count of 0 is a dying edge (eq. 2), with
one exception: an edge first selected by the very last update is in the final mask (not
dying) but was never used by a training step (0 visits).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["BUCKETS", "VISIT_CAP", "add_visit", "visit_histogram", "visit_ratio"]

#: Bucket names: exact counts 0..5, then everything above.
BUCKETS: tuple[str, ...] = ("0", "1", "2", "3", "4", "5", "gt5")
#: Counts saturate here: "gt5" holds every count from 6 up, so a count needs no more (1 byte).
VISIT_CAP = len(BUCKETS) - 1


def add_visit(counts: Tensor, mask: Tensor) -> Tensor:
    """counts <- min(counts + mask, VISIT_CAP), in place, on uint8 counts (1 byte per edge).

    Every bucket of `visit_histogram` stays what unbounded counts give. Adding the bool mask
    viewed as uint8 keeps the add in one dtype (an int32 += bool runs ~25x slower on CPU).
    """
    if counts.dtype != torch.uint8 or mask.dtype != torch.bool:
        raise TypeError(f"add_visit wants uint8 counts and a bool mask, got {counts.dtype} and {mask.dtype}")
    return counts.add_(mask.contiguous().view(torch.uint8)).clamp_max_(VISIT_CAP)


def visit_histogram(counts: Mapping[str, Tensor] | Tensor) -> dict[str, int]:
    """Edges per bucket, over all layers together."""
    tensors = [counts] if isinstance(counts, Tensor) else list(counts.values())
    hist = dict.fromkeys(BUCKETS, 0)
    for t in tensors:
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"visit counts must be integers, got {t.dtype}")
        if bool((t < 0).any()):
            raise ValueError("visit counts must be >= 0")
        small = torch.bincount(t.clamp(max=6).flatten().long(), minlength=7)
        for name, value in zip(BUCKETS, small.tolist(), strict=True):
            hist[name] += int(value)
    return hist


def visit_ratio(numerator: Mapping[str, int], denominator: Mapping[str, int]) -> dict[str, float]:
    """Bucket-wise ratio of two histograms (Fig. 17: EP / soft iEP); inf where only one has edges."""
    out: dict[str, float] = {}
    for name in BUCKETS:
        a, b = numerator[name], denominator[name]
        out[name] = a / b if b else (float("inf") if a else float("nan"))
    return out
