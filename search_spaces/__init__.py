"""Registry of named search spaces, one module per family."""

from __future__ import annotations

from pathlib import Path

from search_spaces import baselines, dst, edge_popup, imp, nm, tour
from search_spaces.base import Plan, SearchSpace, make_plan
from search_spaces.files import is_space_file, load_space_file
from trainables.config import ConfigError

REGISTRY: dict[str, SearchSpace] = {s.name: s for s in (*edge_popup.SPACES, *baselines.SPACES, *dst.SPACES,
                                                 *imp.SPACES, *tour.SPACES, *nm.SPACES)}
DEFAULT_SPACE = "tour"


def get_space(name: str) -> SearchSpace:
    if name not in REGISTRY:
        raise ConfigError(f"--space: {name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def load_space(value: str) -> tuple[SearchSpace, str]:
    """--space: a registered name, or a space file (returned with its absolute path, else "")."""
    if not is_space_file(value):
        return get_space(value), ""
    space = load_space_file(value)
    if space.name in REGISTRY:
        raise ConfigError(f"--space {value}: name {space.name!r} is a registered space; give the "
                          f"file's space a name of its own")
    return space, str(Path(value).resolve())


__all__ = ["DEFAULT_SPACE", "REGISTRY", "Plan", "SearchSpace", "get_space", "load_space", "make_plan"]
