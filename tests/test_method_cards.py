"""Method cards: one record per method that the config, the engine, the MLflow tags and the
report all read; registration refuses a name already taken."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from trainables.config import (
    METHOD_CARDS,
    METHODS,
    ConfigError,
    DenseConfig,
    ExperimentConfig,
    MethodCard,
    family_of,
    label_of,
    method_short_keys,
    param,
    register_method,
)
from trainables.config import cards as cards_module
from trainables.methods import Dense, Method, build_method


def test_each_builtin_card_names_its_config_and_method_class() -> None:
    assert list(METHODS) == ["edge_popup", "dense", "iep", "dense_lrr", "dst", "imp"]
    for name, card in METHOD_CARDS.items():
        assert METHODS[name] is card.config and card.config().name == name
        cls = card.method_class()
        assert issubclass(cls, Method) and cls.__module__.startswith("trainables.methods.")
        assert issubclass(card.config, cls.config_class)  # the Method's guard accepts the card's config
        method = build_method(ExperimentConfig.from_flat({"method.name": name}))
        assert type(method) is cls and method.method_cfg is method.cfg.method


def test_a_method_refuses_another_methods_config() -> None:
    with pytest.raises(TypeError, match="Dense needs a DenseConfig, got EdgePopupConfig"):
        Dense(ExperimentConfig())


def test_families_labels_and_short_keys_are_the_cards() -> None:
    assert {n: family_of(n) for n in METHODS} == {
        "edge_popup": "strong_lottery", "dense": "dense", "iep": "strong_lottery", "dense_lrr": "imp",
        "dst": "dst", "imp": "imp"}
    assert [label_of(n) for n in METHODS] == ["EP", "dense", "iEP", "dense LRR", "DST", "IMP"]
    assert family_of("gone") == "gone" and label_of("gone") == "gone"  # runs of a removed method
    assert method_short_keys() == {
        "method.prune_rate": "k", "method.density": "d", "method.prune_fraction": "p", "method.shrinkage": "p",
        "method.update_period": "dt", "method.criterion": "crit", "method.repel_lambda": "lambda_r"}


def test_register_method_refuses_a_taken_name_and_bad_cards() -> None:
    before = dict(METHOD_CARDS)
    with pytest.raises(ValueError, match="'dense' is already registered"):
        register_method(MethodCard("dense", DenseConfig, Dense, family="x", label="x"))
    with pytest.raises(ValueError, match="defaults to 'dense'; they must agree"):
        register_method(MethodCard("other", DenseConfig, Dense, family="x", label="x"))
    with pytest.raises(ValueError, match="module:Class"):
        register_method(MethodCard("dense2", _Dense2Config, "trainables.methods.dense.Dense", family="x", label="x"))
    assert dict(METHOD_CARDS) == before


@dataclass(frozen=True)
class _Dense2Config(DenseConfig):
    name: str = param("dense2", "method")
    extra: int = param(3, "a key only this method has", ge=1)


def test_a_registered_method_is_a_config_choice_at_once() -> None:
    with pytest.raises(ConfigError, match="'dense2' is not one of"):
        ExperimentConfig.from_flat({"method.name": "dense2"})
    register_method(MethodCard("dense2", _Dense2Config, "trainables.methods.dense:Dense", family="dense",
                               label="dense 2", short_keys={"method.extra": "x"}))
    try:
        cfg = ExperimentConfig.from_flat({"method.name": "dense2", "method.extra": "5"})
        assert cfg.method == _Dense2Config(extra=5) and "dense2" in METHODS
        assert type(build_method(cfg)) is Dense and method_short_keys()["method.extra"] == "x"
        with pytest.raises(ConfigError, match=r"method.extra: 0 must be >= 1"):
            cfg.with_overrides({"method.extra": 0})
    finally:
        cards_module._CARDS.pop("dense2", None)


def test_the_cards_import_without_torch() -> None:
    """The orchestrator's report and UI read the cards; they must not pull in torch."""
    code = ("import sys, trainables.config as c; c.METHOD_CARDS['imp'].family; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
