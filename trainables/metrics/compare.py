"""Mask comparisons between two runs, from their artifacts (as MLflow stores them).

Each run's artifact directory holds `masks/cycle_XX.parquet` (every cycle's final mask) and,
with `run.masks_every`, `masks/epoch_XXXX.parquet`. Runs of the strong-lottery spaces with
the same shrinkage end their cycles at the same remaining ratios, so cycle i of EP, hard and
soft iEP compare directly (soft-iep-appendix C.3.1, Fig. 15); two runs from one init with
different `run.data_seed` compare epoch by epoch (A.3, Fig. 8).
"""

from __future__ import annotations

import re
from pathlib import Path

from trainables.metrics.dying import jaccard_distance
from trainables.metrics.overlap import (
    jaccard_distance_chance,
    shared_mask_ratio,
    shared_ratio_chance,
)
from trainables.sparse.mask_io import read_masks

__all__ = ["jaccard_by_cycle", "mask_files", "shared_ratio_by_epoch"]

_NAME = re.compile(r"^(cycle|epoch)_(\d+)\.parquet$")


def mask_files(artifact_dir: str | Path, kind: str) -> dict[int, Path]:
    """`masks/<kind>_N.parquet` files of a run's artifact directory, by N (kind: cycle, epoch)."""
    folder = Path(artifact_dir) / "masks"
    out = {}
    for path in folder.glob(f"{kind}_*.parquet"):
        match = _NAME.match(path.name)
        if match and match.group(1) == kind:
            out[int(match.group(2))] = path
    return dict(sorted(out.items()))


def _density(masks: dict) -> float:
    kept = sum(int(m.sum()) for m in masks.values())
    return kept / sum(m.numel() for m in masks.values())


def jaccard_by_cycle(run_a: str | Path, run_b: str | Path) -> list[dict[str, float]]:
    """Per cycle both runs reached: Jaccard distance (eq. 5) and its chance level at the
    cycle's remaining ratio (the mean of the two runs' densities)."""
    files_a, files_b = mask_files(run_a, "cycle"), mask_files(run_b, "cycle")
    rows = []
    for cycle in sorted(files_a.keys() & files_b.keys()):
        a, b = read_masks(files_a[cycle]), read_masks(files_b[cycle])
        density = (_density(a) + _density(b)) / 2
        rows.append({"cycle": cycle, "remaining_ratio": density, "jaccard_distance": jaccard_distance(a, b),
                     "chance": jaccard_distance_chance(density)})
    return rows


def shared_ratio_by_epoch(run_a: str | Path, run_b: str | Path) -> list[dict[str, float]]:
    """Per epoch both runs saved: the fraction of agreeing mask entries and its chance level
    k² + (1 - k)² at the epoch's prune rate (the mean of the two runs')."""
    files_a, files_b = mask_files(run_a, "epoch"), mask_files(run_b, "epoch")
    rows = []
    for epoch in sorted(files_a.keys() & files_b.keys()):
        a, b = read_masks(files_a[epoch]), read_masks(files_b[epoch])
        k = 1 - (_density(a) + _density(b)) / 2
        rows.append({"epoch": epoch, "shared_ratio": shared_mask_ratio(a, b), "chance": shared_ratio_chance(k)})
    return rows
