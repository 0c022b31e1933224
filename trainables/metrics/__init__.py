"""Metrics computed from masks and weights; methods only record the history they need."""

from trainables.metrics.compare import jaccard_by_cycle, mask_files, shared_ratio_by_epoch
from trainables.metrics.criteria_jaccard import (
    criteria_jaccard_rows,
    expected_random_jaccard,
    jaccard_index,
    jaccard_matrix,
    mask_jaccard_matrix,
    mean_layer_jaccard,
    random_reference,
)
from trainables.metrics.dying import apparent_dying_ratio, dying_ratio, jaccard_distance
from trainables.metrics.itop import itop_ratio, record_masks
from trainables.metrics.loss_gap import loss_gap
from trainables.metrics.neurons import dying_neurons, second_last_pair
from trainables.metrics.overlap import (
    jaccard_distance_chance,
    jaccard_index_chance,
    shared_mask_ratio,
    shared_ratio_chance,
)
from trainables.metrics.ranks import normalized_ranks, rank_table, sample_edges
from trainables.metrics.visits import BUCKETS, visit_histogram, visit_ratio

# trainables.metrics.ranking (Friedman / Nemenyi, Fig. 3) is imported on its own: it loads
# scikit-posthocs, which no training process needs.

__all__ = [
    "BUCKETS",
    "apparent_dying_ratio",
    "criteria_jaccard_rows",
    "dying_neurons",
    "dying_ratio",
    "expected_random_jaccard",
    "itop_ratio",
    "jaccard_by_cycle",
    "jaccard_distance",
    "jaccard_distance_chance",
    "jaccard_index",
    "jaccard_index_chance",
    "jaccard_matrix",
    "loss_gap",
    "mask_jaccard_matrix",
    "mask_files",
    "mean_layer_jaccard",
    "normalized_ranks",
    "random_reference",
    "rank_table",
    "record_masks",
    "sample_edges",
    "second_last_pair",
    "shared_mask_ratio",
    "shared_ratio_by_epoch",
    "shared_ratio_chance",
    "visit_histogram",
    "visit_ratio",
]
