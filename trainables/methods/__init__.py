"""The algorithms, built by `method.name` from the experiment config.

Which `Method` class trains which name is the method card's fact (`trainables.config.cards`).
"""

from __future__ import annotations

from trainables.config import METHOD_CARDS, ExperimentConfig
from trainables.methods.base import Method
from trainables.methods.dense import Dense
from trainables.methods.dense_lrr import DenseLRR
from trainables.methods.dst import DST
from trainables.methods.edge_popup import EdgePopup
from trainables.methods.imp import Imp
from trainables.methods.iterative_edge_popup import IterativeEdgePopup

__all__ = ["DST", "Dense", "DenseLRR", "EdgePopup", "Imp", "IterativeEdgePopup", "Method", "build_method"]


def build_method(cfg: ExperimentConfig) -> Method:
    """The Method for `cfg.method.name`."""
    try:
        card = METHOD_CARDS[cfg.method.name]
    except KeyError:
        raise ValueError(f"method.name: {cfg.method.name!r} is not one of "
                         f"{', '.join(METHOD_CARDS)}") from None
    return card.method_class()(cfg)
