"""Metrics computed from masks and weights; methods only record the history they need."""

from trainables.metrics.dying import dying_ratio, jaccard_distance

__all__ = ["dying_ratio", "jaccard_distance"]
