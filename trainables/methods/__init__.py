"""The algorithms, built by `method.name` from the experiment config."""

from __future__ import annotations

from collections.abc import Callable

from trainables.config import METHODS, ExperimentConfig
from trainables.methods.base import Method
from trainables.methods.dense import Dense
from trainables.methods.dense_lrr import DenseLRR
from trainables.methods.dst import DST
from trainables.methods.edge_popup import EdgePopup
from trainables.methods.imp import Imp
from trainables.methods.iterative_edge_popup import IterativeEdgePopup

__all__ = ["DST", "METHOD_REGISTRY", "Dense", "DenseLRR", "EdgePopup", "Imp", "IterativeEdgePopup", "Method",
           "build_method"]

METHOD_REGISTRY: dict[str, Callable[[ExperimentConfig], Method]] = {
    "edge_popup": EdgePopup,
    "dense": Dense,
    "iep": IterativeEdgePopup,
    "dense_lrr": DenseLRR,
    "dst": DST,
    "imp": Imp,
}
assert METHOD_REGISTRY.keys() == METHODS.keys(), "every method config needs its Method, and back"


def build_method(cfg: ExperimentConfig) -> Method:
    """The Method for `cfg.method.name`."""
    try:
        factory = METHOD_REGISTRY[cfg.method.name]
    except KeyError:
        raise ValueError(f"method.name: {cfg.method.name!r} is not one of "
                         f"{', '.join(METHOD_REGISTRY)}") from None
    return factory(cfg)
