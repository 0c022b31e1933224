"""Mask primitives: density conversions, supermask layers, inits and mask I/O."""

from trainables.sparse.density import (
    density,
    kept_count,
    prune_rate_from_density,
    pruned_count,
    sparsity,
)
from trainables.sparse.init import SCORE_INIT, WEIGHT_INIT, fan_in, init_scores, init_weight
from trainables.sparse.mask_io import MaskFileError, read_masks, write_masks
from trainables.sparse.selection import topk_mask
from trainables.sparse.supermask import (
    SUPERMASK,
    StraightThrough,
    SupermaskConv2d,
    SupermaskLinear,
    SupermaskMixin,
    supermask_modules,
)

__all__ = [
    "SCORE_INIT",
    "SUPERMASK",
    "WEIGHT_INIT",
    "MaskFileError",
    "StraightThrough",
    "SupermaskConv2d",
    "SupermaskLinear",
    "SupermaskMixin",
    "density",
    "fan_in",
    "init_scores",
    "init_weight",
    "kept_count",
    "prune_rate_from_density",
    "pruned_count",
    "read_masks",
    "sparsity",
    "supermask_modules",
    "topk_mask",
    "write_masks",
]
