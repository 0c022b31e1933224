"""The registries map each name to the thing the name says: models, methods, inits.

The modules assert at import time that each registry has the config's names; a test that
repeats that assert can never fail on its own. These check what a wrong entry would break:
a swapped or copied builder builds another depth, another method trains other parameters,
another init draws other numbers.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from trainables.config import METHODS, MODELS, SCORE_INITS, WEIGHT_INITS, ExperimentConfig
from trainables.methods import build_method
from trainables.models import LARGE_MLP_HIDDEN, SMALL_MLP_HIDDEN, build_model
from trainables.models.layers import DENSE
from trainables.sparse.init import fan_in, init_scores, init_weight


def _model(name: str) -> nn.Module:
    dataset = "digits" if name.startswith("mlp") else "cifar10"
    overrides = {"model.name": name, "data.dataset": dataset}
    if dataset != "digits":
        overrides["data.data_dir"] = "/unused"  # models never read data
    with torch.device("meta"):  # shapes only: every model of the zoo in milliseconds
        return build_model(ExperimentConfig().with_overrides(overrides), DENSE)


def _main_path_depth(model: nn.Module) -> int:
    """Conv and linear layers outside the shortcut projections: how ResNets count depth."""
    return sum(1 for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
               and "shortcut" not in n and "downsample" not in n)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("name", MODELS)
def test_each_model_name_builds_its_architecture(name: str) -> None:
    model = _model(name)
    params = sum(p.numel() for p in model.parameters())
    if m := re.fullmatch(r"conv(\d)", name):
        assert len(_convs(model)) == int(m.group(1)) and len(_linears(model)) == 3
    elif m := re.fullmatch(r"(?:wide_)?resne(?:t|xt)(\d+)(?:_.*)?", name):
        assert _main_path_depth(model) == int(m.group(1))
        if name.startswith("resnext"):  # 32 groups of width 4 in the first stage
            assert any(c.groups == 32 and c.out_channels == 128 for c in _convs(model))
    elif name == "convmixer_256_8":  # depth 8 of depthwise convs over 256 channels
        depthwise = [c for c in _convs(model) if c.groups == c.in_channels > 1]
        assert len(depthwise) == 8 and {c.in_channels for c in depthwise} == {256}
    elif name == "vgg16_bn":  # VGG-16's 13 convs, each followed by BatchNorm
        assert len(_convs(model)) == 13
        assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    elif name == "lenet5_caffe":  # Caffe's LeNet-5: conv 20, conv 50, fc 500, fc 10
        assert [c.out_channels for c in _convs(model)] == [20, 50]
        assert [f.out_features for f in _linears(model)] == [500, 10]
    elif name == "cnn_small":
        assert len(_convs(model)) == 3 and len(_linears(model)) == 1
    elif name == "efficientnet_b0":  # 16 MBConv blocks, each with one depthwise conv; 1280 features
        assert sum(c.groups == c.in_channels > 1 for c in _convs(model)) == 16
        assert _linears(model)[-1].in_features == 1280
    elif name.startswith("mlp"):
        hidden = {"mlp": (300, 100), "mlp_small": SMALL_MLP_HIDDEN, "mlp_large": LARGE_MLP_HIDDEN}[name]
        assert [f.out_features for f in _linears(model)][:-1] == list(hidden)
    else:  # pragma: no cover - a new model must say here what its name promises
        pytest.fail(f"no architecture check for model {name}")
    if name == "wide_resnet50_2":  # twice as wide as resnet50 inside each bottleneck
        assert params > 2.5 * sum(p.numel() for p in _model("resnet50").parameters())


def _trainable_names(method: str) -> set[str]:
    overrides = {"method.name": method, "model.name": "mlp", "model.mlp_hidden": "8"}
    cfg = ExperimentConfig().with_overrides(overrides)
    built = build_method(cfg)
    model = build_model(cfg, built.layer_factory())
    built.init_model(model)
    return {n for n, p in model.named_parameters() for g in built.trainable_parameters(model)
            for q in g["params"] if q is p}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_name_builds_its_method(method: str) -> None:
    cfg = ExperimentConfig().with_overrides({"method.name": method, "model.name": "mlp"})
    built = build_method(cfg)
    trained = _trainable_names(method)
    plan = built.cycle_plan()
    if method in ("edge_popup", "iep"):  # strong lottery: only scores train, weights frozen
        assert trained and all(n.endswith(".scores") for n in trained)
    else:  # weights train (dense, DST, dense LR rewinding)
        assert trained and any(n.endswith(".weight") for n in trained) and not any(
            n.endswith(".scores") for n in trained)
    cycles = getattr(cfg.method, "cycles", 0)
    rounds = getattr(cfg.method, "rounds", 0)  # IMP: an IMP and a reinit cycle per round, no reinit in round 1
    assert plan.count == {"iep": cycles, "dense_lrr": cycles + 1, "imp": 2 * rounds - 1}.get(method, 1)
    model = build_model(cfg, built.layer_factory())
    built.init_model(model)
    assert bool(built.masks(model)) == type(cfg.method).masked  # dense keeps no mask


def _draw(kind: str, name: str) -> torch.Tensor:
    t = torch.empty(256, 64, 3, 3)
    gen = torch.Generator().manual_seed(0)
    if kind == "weight":
        init_weight(t, name, prune_rate=0.5, generator=gen)
    else:
        init_scores(t, name, generator=gen)
    return t


@pytest.mark.parametrize(("kind", "name"), [*(("weight", n) for n in WEIGHT_INITS),
                                            *(("score", n) for n in SCORE_INITS)])
def test_each_init_name_draws_its_distribution(kind: str, name: str) -> None:
    t = _draw(kind, name)
    n = fan_in(t)  # 576
    distinct = t.abs().unique().numel()
    if name == "signed_constant":  # ±√(2/fan_in), one magnitude
        assert distinct == 1 and math.isclose(float(t.abs()[0, 0, 0, 0]), math.sqrt(2 / n), rel_tol=1e-6)
    elif name == "scaled_signed_constant":  # ±√(2/fan_in)/√(1−k): k = 0.5 here
        assert distinct == 1 and math.isclose(float(t.abs()[0, 0, 0, 0]), math.sqrt(2 / n) / math.sqrt(0.5),
                                              rel_tol=1e-6)
    elif kind == "weight" and name == "kaiming_uniform":  # U(±√(6/fan_in))
        bound = math.sqrt(6 / n)
        assert distinct > 1000 and float(t.abs().max()) <= bound and float(t.abs().max()) > 0.99 * bound
    elif kind == "score" and name == "kaiming_uniform":  # U(±1/√fan_in), a = √5
        bound = 1 / math.sqrt(n)
        assert distinct > 1000 and 0.99 * bound < float(t.abs().max()) <= bound
    elif name == "kaiming_normal":  # N(0, 2/fan_in): unbounded, std √(2/fan_in)
        assert math.isclose(float(t.std()), math.sqrt(2 / n), rel_tol=0.02)
        assert float(t.abs().max()) > 3.5 * math.sqrt(2 / n)
    else:  # pragma: no cover - a new init must say here what its name promises
        pytest.fail(f"no distribution check for {kind} init {name}")
