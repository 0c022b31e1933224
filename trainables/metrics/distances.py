"""Distances between networks on their shared weights (understanding-imp.txt §4.1, appendix B).

Two sparse networks θ_1 (mask m_1) and θ_2 (mask m_2) are compared on m = m_1 ⊙ m_2:
d(θ_1⊙m, θ_2⊙m). The paper's distance is the angle scaled to [0, 1] (for non-negative
cosines), d = 2·∠(v_1, v_2)/π: 0 for parallel vectors, 1 for orthogonal ones, invariant to the
norm (a sparse network's norm is larger than that of a subset of a dense one). Appendix B's
alternatives: the cosine distance 1 - cos and the Euclidean distance ‖v_1 - v_2‖.

Rows (a, b, angular, cosine, euclidean) go out as a Parquet table per round; `distance_matrix`
turns them back into the square matrix of Figs. 4, 9-11 ("init" is the last row/column).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

__all__ = [
    "DISTANCE_KINDS",
    "angular_distance",
    "cosine_distance",
    "distance_matrix",
    "distance_row",
    "distance_table",
    "euclidean_distance",
    "shared_vectors",
]

DISTANCE_KINDS: tuple[str, ...] = ("angular", "cosine", "euclidean")


def _cos(a: Tensor, b: Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return math.nan
    return max(-1.0, min(1.0, float(torch.dot(a, b)) / (na * nb)))


def angular_distance(a: Tensor, b: Tensor) -> float:
    """2·∠(a, b)/π: 0 for parallel vectors, 1 for orthogonal ones (2 for opposite ones)."""
    c = _cos(a, b)
    return math.nan if math.isnan(c) else 2.0 * math.acos(c) / math.pi


def cosine_distance(a: Tensor, b: Tensor) -> float:
    """1 - cos(a, b) (appendix B, Fig. 10)."""
    c = _cos(a, b)
    return math.nan if math.isnan(c) else 1.0 - c


def euclidean_distance(a: Tensor, b: Tensor) -> float:
    """‖a - b‖ (appendix B, Fig. 11)."""
    return float((a.double().flatten() - b.double().flatten()).norm())


def shared_vectors(a: Mapping[str, Tensor], b: Mapping[str, Tensor],
                   mask_a: Mapping[str, Tensor], mask_b: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """θ_1⊙m and θ_2⊙m flattened over all layers, m = m_1 ⊙ m_2 (the active entries only)."""
    xs, ys = [], []
    for name in a:
        m = (mask_a[name].bool() & mask_b[name].bool()).flatten().cpu()
        xs.append(a[name].detach().flatten().cpu()[m])
        ys.append(b[name].detach().flatten().cpu()[m])
    return torch.cat(xs), torch.cat(ys)


def distance_row(kind: str, a: str, b: str, x: Tensor, y: Tensor) -> dict[str, object]:
    """One row of the distance table: which pair, and all three distances."""
    return {"kind": kind, "a": a, "b": b, "angular": angular_distance(x, y),
            "cosine": cosine_distance(x, y), "euclidean": euclidean_distance(x, y)}


def distance_table(rows: Sequence[Mapping[str, object]]) -> pa.Table:
    """Rows (kind, a, b, angular, cosine, euclidean) as an Arrow table."""
    return pa.table({
        "kind": pa.array([str(r["kind"]) for r in rows], pa.string()),
        "a": pa.array([str(r["a"]) for r in rows], pa.string()),
        "b": pa.array([str(r["b"]) for r in rows], pa.string()),
        **{k: pa.array([float(r[k]) for r in rows], pa.float64()) for k in DISTANCE_KINDS},  # type: ignore[arg-type]
    })


def distance_matrix(table: pa.Table, kind: str = "imp", metric: str = "angular") -> tuple[list[str], np.ndarray]:
    """Square symmetric matrix (labels, values) of one kind's rows; "init" sorts last, NaN where unknown."""
    if metric not in DISTANCE_KINDS:
        raise ValueError(f"metric must be one of {', '.join(DISTANCE_KINDS)}, got {metric!r}")
    rows = [r for r in table.to_pylist() if r["kind"] == kind]
    labels = sorted({str(r[s]) for r in rows for s in ("a", "b")}, key=lambda s: (s == "init", s))
    index = {label: i for i, label in enumerate(labels)}
    out = np.full((len(labels), len(labels)), np.nan)
    np.fill_diagonal(out, 0.0)
    for r in rows:
        i, j = index[str(r["a"])], index[str(r["b"])]
        out[i, j] = out[j, i] = r[metric]
    return labels, out
