"""Score-rank trajectories (soft-iep.txt §5 "Benefit of soft pruning", Fig. 5b).

A fixed random sample of edges is followed across cycles: at each cycle's end, each sampled
edge's rank within its layer (0 = highest selection score, 1 = lowest) and whether it is
selected, with the cycle's threshold (the kept fraction of its layer): an edge is selected
exactly when its rank lies below the threshold. Ranks use the selection key, so under hard
pruning the edges outside the search space sit at the bottom.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import torch
from torch import Tensor

__all__ = ["RANK_SCHEMA", "normalized_ranks", "rank_table", "sample_edges"]

RANK_SCHEMA = pa.schema([
    pa.field("cycle", pa.int32()),
    pa.field("edge", pa.int32()),  # position in the sample (the same edge in every cycle)
    pa.field("layer", pa.string()),
    pa.field("index", pa.int64()),  # flat index within the layer
    pa.field("score", pa.float64()),  # the selection key (|s|, -1 outside a hard search space)
    pa.field("rank", pa.float64()),  # edges ranked strictly above / layer size
    pa.field("selected", pa.bool_()),
    pa.field("threshold", pa.float64()),  # kept / layer size this cycle
])


def sample_edges(sizes: Mapping[str, int], count: int, generator: torch.Generator) -> list[tuple[str, int]]:
    """`count` distinct edges drawn uniformly over all layers together, as (layer, flat index)."""
    total = sum(sizes.values())
    count = min(count, total)
    picks = torch.randperm(total, generator=generator)[:count].sort().values.tolist()
    out: list[tuple[str, int]] = []
    names, starts, start = list(sizes), [], 0
    for name in names:
        starts.append(start)
        start += sizes[name]
    layer = 0
    for flat in picks:
        while layer + 1 < len(names) and flat >= starts[layer + 1]:
            layer += 1
        out.append((names[layer], flat - starts[layer]))
    return out


def normalized_ranks(key: Tensor, indices: Tensor) -> Tensor:
    """For each index, the fraction of the layer's entries with a strictly larger key."""
    flat = key.detach().flatten()
    ascending = flat.sort().values
    above = flat.numel() - torch.searchsorted(ascending, flat[indices], right=True)
    return above.double() / flat.numel()


def rank_table(cycle: int, sample: list[tuple[str, int]], keys: Mapping[str, Tensor],
               masks: Mapping[str, Tensor]) -> pa.Table:
    """One row per sampled edge for this cycle (schema RANK_SCHEMA)."""
    rows: dict[str, list] = {f.name: [] for f in RANK_SCHEMA}
    by_layer: dict[str, list[tuple[int, int]]] = {}
    for edge, (layer, index) in enumerate(sample):
        by_layer.setdefault(layer, []).append((edge, index))
    for layer, items in by_layer.items():
        key, mask = keys[layer].flatten(), masks[layer].flatten()
        idx = torch.tensor([i for _, i in items], device=key.device)
        ranks = normalized_ranks(key, idx).tolist()
        threshold = int(torch.count_nonzero(mask)) / mask.numel()
        for (edge, index), rank, score, selected in zip(
                items, ranks, key[idx].double().tolist(), mask[idx].tolist(), strict=True):
            for name, value in (("cycle", cycle), ("edge", edge), ("layer", layer), ("index", index),
                                ("score", score), ("rank", rank), ("selected", bool(selected)),
                                ("threshold", threshold)):
                rows[name].append(value)
    table = pa.table(rows, schema=RANK_SCHEMA)
    return table.sort_by("edge")
