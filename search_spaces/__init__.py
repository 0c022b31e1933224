"""Registry of named search spaces, one module per family."""

from __future__ import annotations

from search_spaces import baselines, dst, edge_popup, imp, nm, tour
from search_spaces.base import Plan, SearchSpace, make_plan
from trainables.config import ConfigError

REGISTRY: dict[str, SearchSpace] = {s.name: s for s in (*edge_popup.SPACES, *baselines.SPACES, *dst.SPACES,
                                                 *imp.SPACES, *tour.SPACES, *nm.SPACES)}
DEFAULT_SPACE = "tour"


def get_space(name: str) -> SearchSpace:
    if name not in REGISTRY:
        raise ConfigError(f"--space: {name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


__all__ = ["DEFAULT_SPACE", "REGISTRY", "Plan", "SearchSpace", "get_space", "make_plan"]
