"""Histograms of surviving weights (understanding-imp.txt §4.2, Figs. 5, 19, 22).

Stable IMP retrains to an optimum with few weights near zero (a bimodal histogram); its
reinit baseline does not. Bins are symmetric around 0 and span the largest |θ|, so rounds and
runs with a shared range compare bin by bin.
"""

from __future__ import annotations

import pyarrow as pa
import torch
from torch import Tensor

__all__ = ["weight_histogram"]


def weight_histogram(values: Tensor, bins: int, kind: str = "imp", limit: float | None = None) -> pa.Table:
    """Counts of `values` (the surviving weights, flat) in `bins` equal bins over [-limit, limit]."""
    v = values.detach().double().flatten().cpu()
    lim = float(v.abs().max()) if limit is None and v.numel() else (limit or 1.0)
    lim = lim or 1.0
    counts = torch.histc(v, bins=bins, min=-lim, max=lim).round().to(torch.int64)
    edges = torch.linspace(-lim, lim, bins + 1, dtype=torch.float64)
    return pa.table({"kind": pa.array([kind] * bins, pa.string()),
                     "left": pa.array(edges[:-1].tolist(), pa.float64()),
                     "right": pa.array(edges[1:].tolist(), pa.float64()),
                     "count": pa.array(counts.tolist(), pa.int64())})
