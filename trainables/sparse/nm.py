"""N:M mask primitives: per-group selection, nesting, regrowth and checks.

Grouping (trainables.sparse.nm_pattern): a weight of shape (out, *in) is viewed as rows
W.reshape(out, -1) and every row is cut into consecutive groups of M; with M dividing the
row length, `t.reshape(-1, M)` is exactly that list of groups. Every selection here is a
`torch.topk` (or a stable sort) along the group dimension, so counts are exact under ties.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from trainables.sparse.nm_pattern import NM, parse_pattern

__all__ = [
    "fits",
    "group_counts",
    "grow_in_groups",
    "in_dim",
    "is_nm",
    "layer_patterns",
    "nm_nested",
    "nm_random_mask",
    "nm_topk",
]


def in_dim(shape: Iterable[int]) -> int:
    """Input dimension of a weight: everything but the output dimension (c·kh·kw for a conv)."""
    shape = tuple(shape)
    return math.prod(shape[1:]) if len(shape) >= 2 else 0


def fits(shape: Iterable[int], m: int) -> bool:
    """Whether groups of `m` tile every row of a weight of `shape`."""
    d = in_dim(shape)
    return d > 0 and d % m == 0


def _groups(t: Tensor, m: int) -> Tensor:
    if not fits(t.shape, m):
        raise ValueError(f"N:M groups of {m} do not tile a weight of shape {tuple(t.shape)} "
                         f"(input dimension {in_dim(t.shape)})")
    return t.reshape(-1, m)


def nm_topk(key: Tensor, n: int, m: int) -> Tensor:
    """Bool mask of `key`'s shape keeping the `n` largest keys of every group of `m`."""
    if not 0 <= n <= m:
        raise ValueError(f"cannot keep {n} of a group of {m}")
    g = _groups(key.detach(), m)
    out = torch.zeros(g.shape, dtype=torch.bool, device=key.device)
    if n:
        out.scatter_(1, torch.topk(g, n, dim=1, largest=True, sorted=False).indices, True)
    return out.view(key.shape)


def nm_nested(key: Tensor, counts: tuple[int, ...], m: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Σ_i m_i with m_i the top-`counts[i]` of each group, m_{i+1} chosen inside m_i (coats).

    `counts` descend; each further coat is a top-k among the previous coat's entries of the
    group, so coats nest exactly under ties (as `supermask.coat_mask` does per layer).
    """
    if any(a < b for a, b in zip(counts, counts[1:], strict=False)):
        raise ValueError(f"coat counts per group must descend, got {counts}")
    g = _groups(key.detach(), m)
    out = torch.zeros(g.shape, dtype=dtype, device=key.device)
    if counts[0] == 0:
        return out.view(key.shape)
    idx = torch.topk(g, counts[0], dim=1, largest=True, sorted=False).indices
    out.scatter_(1, idx, 1.0)
    for c in counts[1:]:
        if c == 0:
            break
        if c < idx.shape[1]:
            sub = torch.topk(g.gather(1, idx), c, dim=1, largest=True, sorted=False).indices
            idx = idx.gather(1, sub)
        out.scatter_add_(1, idx, torch.ones(idx.shape, dtype=dtype, device=key.device))
    return out.view(key.shape)


def nm_random_mask(shape: tuple[int, ...], n: int, m: int, generator: torch.Generator) -> Tensor:
    """A uniformly random N:M mask (DST's initial mask): `n` of every group, drawn on CPU."""
    return nm_topk(torch.rand(shape, generator=generator), n, m)


def group_counts(mask: Tensor, m: int) -> Tensor:
    """Entries kept in each group of `m` (int64, one per group)."""
    return _groups(mask, m).to(torch.int64).sum(1)


def is_nm(mask: Tensor, n: int, m: int) -> bool:
    """Exactly `n` kept in every group of `m`."""
    return bool((group_counts(mask, m) == n).all())


def grow_in_groups(key: Tensor, inactive: Tensor, need: Tensor, m: int) -> Tensor:
    """Bool mask of the `need[g]` inactive entries of largest key in each group g.

    Ties go to the lower index (stable sort), NaN keys rank last; `need[g]` must not exceed
    the inactive entries of group g.
    """
    k = _groups(key.detach().float(), m)
    ok = _groups(inactive, m).to(torch.bool)
    k = torch.where(torch.isnan(k), torch.full_like(k, -math.inf), k)
    k = torch.where(ok, k, torch.full_like(k, -math.inf))
    need = need.to(device=k.device, dtype=torch.int64).view(-1, 1)
    if bool((need > ok.sum(1, keepdim=True)).any()):
        raise ValueError("a group needs more regrown entries than it has inactive ones")
    order = torch.sort(-k, dim=1, stable=True).indices  # descending key, ties by index
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(m, device=k.device).expand_as(order))
    return ((ranks < need) & ok).view(key.shape)


def layer_patterns(shapes: dict[str, tuple[int, ...]], pattern: str, misfit: str) -> dict[str, NM | None]:
    """Per layer: its N:M pair, or None (unstructured pattern, or a misfit kept unstructured).

    A misfit layer with misfit=refuse raises ValueError naming it.
    """
    nm = parse_pattern(pattern)
    out: dict[str, NM | None] = {}
    for name, shape in shapes.items():
        if nm is not None and not fits(shape, nm.m):
            if misfit == "refuse":
                raise ValueError(f"sparsity.pattern: {nm} needs M={nm.m} to divide the input dimension of "
                                 f"every masked layer, but {name} has {in_dim(shape)} (shape {tuple(shape)}); "
                                 f"pick another M or set sparsity.misfit=unstructured")
            out[name] = None
        else:
            out[name] = nm
    return out
