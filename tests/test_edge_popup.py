"""EdgePopup / Dense methods driven through the engine's hooks by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainables.sparse.supermask as sm
from trainables.config import ExperimentConfig
from trainables.methods import Dense, EdgePopup, build_method
from trainables.methods.base import Position, StepContext
from trainables.metrics import dying_ratio, visit_histogram
from trainables.models.layers import DENSE, LayerFactory
from trainables.sparse.supermask import SupermaskConv2d, SupermaskLinear, supermask_modules

POS0 = Position(step=0, epoch=0, cycle=1, steps_per_epoch=1)


def _cfg(**method: object) -> ExperimentConfig:
    return ExperimentConfig().with_overrides({f"method.{k}": v for k, v in method.items()})


def _model(factory: LayerFactory = sm.SUPERMASK) -> nn.Sequential:
    # 3x4x3x3 conv = 108 weights, 64 -> 10 linear = 640: k * n is integral for k = 0.25, 0.5.
    return nn.Sequential(
        factory.conv(3, 4, 3, padding=1), factory.norm(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), factory.linear(64, 10),
    )


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _train(method: EdgePopup, model: nn.Module, steps: int, lr: float) -> list[float]:
    """What the engine does: before_step, forward, backward, step, after_step; the epoch's end
    records the last mask. Returns d_0..d_steps (d_t: masks used up to step t, and the final one)."""
    opt = torch.optim.SGD(method.trainable_parameters(model), lr=lr, momentum=0.9)
    x, y = _data()
    history = [dying_ratio(method.ever)]
    for step in range(steps):
        method.before_step(model, StepContext(step))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        method.after_step(model, StepContext(step))
        history.append(dying_ratio(method.ever))
    method.end_of_epoch(model, 1)
    history[-1] = dying_ratio(method.ever)
    return history


def _setup(k: float = 0.25, **kw: object) -> tuple[EdgePopup, nn.Module]:
    torch.manual_seed(0)
    method = build_method(_cfg(prune_rate=k, **kw))
    assert isinstance(method, EdgePopup)
    model = _model(method.layer_factory())
    method.init_model(model)
    method.on_train_start(model, POS0)
    return method, model


@pytest.mark.parametrize("k", [0.25, 0.5])
def test_d0_equals_k_exactly(k: float) -> None:
    method, model = _setup(k)
    assert dying_ratio(method.ever) == k
    assert all(layer.prune_rate == k for layer in supermask_modules(model).values())


def test_dying_ratio_never_rises_and_drops_for_big_lr() -> None:
    method, model = _setup(0.5)
    history = _train(method, model, steps=20, lr=5.0)
    assert history[0] == 0.5
    assert all(b <= a for a, b in zip(history, history[1:], strict=False))
    assert all(0.5 - d >= 0 for d in history)
    assert history[-1] < history[0]
    metrics = method.end_of_epoch(model, 1)
    assert metrics["dying_ratio"] == history[-1]
    assert metrics["k_minus_dying"] == 0.5 - history[-1]
    assert metrics["density"] == 0.5  # (54 + 320) / 748 kept


def test_one_selection_per_layer_per_step(count_selections: list[int]) -> None:
    method, model = _setup(0.5)
    count_selections[0] = 0  # count the training steps only, not the setup's first selection
    _train(method, model, steps=5, lr=1.0)
    assert count_selections[0] == 2 * 5  # forwards reuse the mask that before_step recorded


def test_history_is_or_of_masks() -> None:
    method, model = _setup(0.5)
    seen = {n: m.clone() for n, m in method.masks(model).items()}
    opt = torch.optim.SGD(method.trainable_parameters(model), lr=5.0)
    x, y = _data()
    for step in range(5):
        method.before_step(model, StepContext(step))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        method.after_step(model, StepContext(step))
        for n, m in method.masks(model).items():
            seen[n] |= m
    method.end_of_epoch(model, 1)  # ORs in the mask the last update produced
    assert all(torch.equal(seen[n], method.ever[n]) for n in seen)


def test_only_scores_are_trainable() -> None:
    method, model = _setup()
    groups = method.trainable_parameters(model)
    params = [p for g in groups for p in g["params"]]
    layers = supermask_modules(model)
    assert {id(p) for p in params} == {id(m.scores) for m in layers.values()}
    assert all(not m.weight.requires_grad for m in layers.values())
    model.append(nn.Linear(10, 2))  # a layer not built by the factory
    with pytest.raises(ValueError, match="require grad"):
        method.trainable_parameters(model)


def test_init_model_weights_and_scores() -> None:
    method, model = _setup(0.5, weight_init="scaled_signed_constant")
    conv = model[0]
    assert isinstance(conv, SupermaskConv2d)
    # fan_in 27, density 0.5: |w| = sqrt(2) / sqrt(27 * 0.5) = 2 / sqrt(27).
    assert torch.allclose(conv.weight.abs(), torch.full_like(conv.weight, 2 / 27**0.5))
    assert float(conv.scores.detach().abs().max()) <= 1 / 27**0.5


def test_weight_and_score_streams_are_independent() -> None:
    _, a = _setup(0.5, score_init="kaiming_uniform")
    _, b = _setup(0.5, score_init="kaiming_normal")
    _, c = _setup(0.5, weight_init="kaiming_uniform")
    assert torch.equal(a[0].weight, b[0].weight) and not torch.equal(a[0].scores, b[0].scores)
    assert torch.equal(a[0].scores, c[0].scores) and not torch.equal(a[0].weight, c[0].weight)


def test_state_dict_round_trip() -> None:
    method, model = _setup(0.5)
    _train(method, model, steps=5, lr=5.0)
    state = method.state_dict()
    assert all(t.device.type == "cpu" and t.dtype == torch.bool for t in state["ever"].values())
    fresh = build_method(_cfg(prune_rate=0.5))
    assert isinstance(fresh, EdgePopup)
    fresh.load_state_dict(state)
    fresh.on_train_start(model, POS0)  # the engine calls it after restoring a checkpoint
    assert fresh.ever.keys() == method.ever.keys()
    assert all(torch.equal(fresh.ever[n], method.ever[n]) for n in method.ever)
    state["ever"]["0.weight"][:] = False  # the state is a copy, not the live history
    assert bool(method.ever["0.weight"].any())
    assert dying_ratio(fresh.ever) == dying_ratio(method.ever)
    assert all(t.dtype == torch.int32 for t in state["visits"].values())  # the file format, as before
    assert all(torch.equal(fresh.visits[n], method.visits[n]) for n in method.visits)
    old = {n: t.to(torch.int32) + 256 * (t > 0) for n, t in state["visits"].items()}  # unbounded counts
    fresh.load_state_dict({**state, "visits": old})
    assert all(fresh.visits[n].dtype == torch.uint8 for n in old)
    assert visit_histogram(fresh.visits) == visit_histogram(old)


def test_edge_popup_factory_layers() -> None:
    method, model = _setup()
    assert isinstance(model[0], SupermaskConv2d) and isinstance(model[5], SupermaskLinear)
    assert not model[1].affine
    assert list(method.masks(model)) == ["0.weight", "5.weight"]


def test_dense_method() -> None:
    torch.manual_seed(0)
    method = build_method(_cfg(name="dense", weight_init="kaiming_normal"))
    assert isinstance(method, Dense) and method.layer_factory() is DENSE
    model = nn.Sequential(nn.Linear(200, 300))
    method.init_model(model)
    assert abs(float(model[0].weight.detach().std()) - (2 / 200) ** 0.5) < 0.005
    assert all(p.requires_grad for g in method.trainable_parameters(model) for p in g["params"])
    assert method.masks(model) == {}
    with pytest.raises(TypeError):
        EdgePopup(_cfg(name="dense"))


def test_dense_keeps_norm_and_bias_out_of_weight_decay() -> None:
    from trainables.models import build_model
    from trainables.optim import build_optimizer

    cfg = ExperimentConfig.from_flat({"method.name": "dense", "model.name": "resnet18",
                                      "model.width": 0.25, "optim.weight_decay": 5e-4})
    method = build_method(cfg)
    model = build_model(cfg, method.layer_factory())
    opt = build_optimizer(cfg, method.trainable_parameters(model))
    by_id = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(by_id) == sum(1 for _ in model.parameters())  # every parameter, once
    for name, p in model.named_parameters():
        decays = name.endswith("weight") and p.dim() > 1  # conv / linear weights only
        assert by_id[id(p)] == (5e-4 if decays else 0.0), name
