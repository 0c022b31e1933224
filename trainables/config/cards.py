"""Method cards: every fact about a method that is not its code, in one record per method.

A card names the method (`method.name`), its config class, its `Method` class, its family
(the runs' `family` tag and the cross-family chart's grouping), the label charts print, and
the short names of its keys in MLflow run names. The `Method` class is given as
"module:Class" and imported on first use, so this module, the config and the orchestrator's
report and UI stay free of torch.

`register_method` is the one way in, for the built-in methods below and for any other
package that brings its own (it refuses a name already taken). `METHODS` (name -> config
class) and `METHOD_CARDS` (name -> card) are live read-only views of the registry.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trainables.config.methods import (
    DenseConfig,
    DenseLRRConfig,
    DSTConfig,
    EdgePopupConfig,
    ImpConfig,
    IterativeEdgePopupConfig,
    MethodConfig,
)


@dataclass(frozen=True)
class MethodCard:
    """One method: its name, config class, Method class, family, label and short key names."""

    name: str
    config: type[MethodConfig]
    method: str | type  # "package.module:Class" (imported on first use) or the class itself
    family: str
    label: str
    short_keys: Mapping[str, str] = field(default_factory=dict)  # "method.<key>" -> name in run names

    def method_class(self) -> type:
        """The `Method` subclass that trains this method (imports its module if named by path)."""
        if not isinstance(self.method, str):
            return self.method
        module, _, attr = self.method.partition(":")
        return getattr(importlib.import_module(module), attr)


_CARDS: dict[str, MethodCard] = {}
METHOD_CARDS: Mapping[str, MethodCard] = MappingProxyType(_CARDS)


def register_method(card: MethodCard) -> MethodCard:
    """Add `card` to the registry; a name already registered is refused (ValueError)."""
    if card.name in _CARDS:
        raise ValueError(f"method {card.name!r} is already registered ({_CARDS[card.name].method})")
    if not (isinstance(card.config, type) and issubclass(card.config, MethodConfig)):
        raise ValueError(f"method {card.name!r}: config must be a MethodConfig subclass, got {card.config!r}")
    if card.config().name != card.name:
        raise ValueError(f"method {card.name!r}: its config's method.name defaults to "
                         f"{card.config().name!r}; they must agree")
    if isinstance(card.method, str) and ":" not in card.method:
        raise ValueError(f"method {card.name!r}: method must be a class or 'module:Class', got {card.method!r}")
    if bad := [k for k in card.short_keys if not k.startswith("method.")]:
        raise ValueError(f"method {card.name!r}: short_keys name method.* keys only, got {', '.join(bad)}")
    _CARDS[card.name] = card
    return card


class _ConfigView(Mapping[str, type[MethodConfig]]):
    """method.name -> config class, read from the cards (so a registered method is in it at once)."""

    def __getitem__(self, name: str) -> type[MethodConfig]:
        return _CARDS[name].config

    def __iter__(self) -> Iterator[str]:
        return iter(_CARDS)

    def __len__(self) -> int:
        return len(_CARDS)

    def __repr__(self) -> str:
        return f"METHODS({', '.join(_CARDS)})"


METHODS: Mapping[str, type[MethodConfig]] = _ConfigView()


def family_of(method_name: str) -> str:
    """The family of a method (its name when no card has it, e.g. a run of a removed method)."""
    card = _CARDS.get(str(method_name))
    return card.family if card else str(method_name)


def label_of(method_name: str) -> str:
    """The label charts print for a method (its name when no card has it)."""
    card = _CARDS.get(str(method_name))
    return card.label if card else str(method_name)


def method_short_keys() -> dict[str, str]:
    """Short names of method keys in run names, over every card."""
    return {key: short for card in _CARDS.values() for key, short in card.short_keys.items()}


# The built-in methods, in the order `--help-config` and error messages list them.
for _card in (
    MethodCard("edge_popup", EdgePopupConfig, "trainables.methods.edge_popup:EdgePopup",
               family="strong_lottery", label="EP", short_keys={"method.prune_rate": "k"}),
    MethodCard("dense", DenseConfig, "trainables.methods.dense:Dense", family="dense", label="dense"),
    MethodCard("iep", IterativeEdgePopupConfig, "trainables.methods.iterative_edge_popup:IterativeEdgePopup",
               family="strong_lottery", label="iEP", short_keys={"method.shrinkage": "p"}),
    MethodCard("dense_lrr", DenseLRRConfig, "trainables.methods.dense_lrr:DenseLRR", family="imp",
               label="dense LRR", short_keys={"method.shrinkage": "p"}),
    MethodCard("dst", DSTConfig, "trainables.methods.dst:DST", family="dst", label="DST",
               short_keys={"method.density": "d", "method.prune_fraction": "p", "method.update_period": "dt",
                           "method.criterion": "crit"}),
    MethodCard("imp", ImpConfig, "trainables.methods.imp:Imp", family="imp", label="IMP",
               short_keys={"method.prune_fraction": "p", "method.repel_lambda": "lambda_r"}),
):
    register_method(_card)


def extend_method_config(name: str, fields: list[tuple[str, type, Any]],
                         reduce: Callable[[Any], tuple[Any, ...]]) -> type[MethodConfig]:
    """Add keys to a registered method's config (a plugin criterion's parameters, as DST keys):
    the card's config becomes a subclass with `fields` ((name, type, field) each, with
    defaults); keys are only ever added, and a name the config already has is refused.
    `reduce` pickles an instance (the subclass is made at run time: it cannot be found by name)."""
    card = _CARDS[name]
    have = {f.name for f in dataclasses.fields(card.config)}
    if clash := [f[0] for f in fields if f[0] in have]:
        raise ValueError(f"method.{clash[0]} is already a key of {name}")
    base = card.config
    extended = dataclasses.make_dataclass(base.__name__, fields, bases=(base,), frozen=True,
                                          namespace={"__reduce__": reduce, "__doc__": base.__doc__})
    extended.__module__ = base.__module__
    _CARDS[name] = dataclasses.replace(card, config=extended)
    return extended
