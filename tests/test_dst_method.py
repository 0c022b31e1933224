"""The DST method through its hooks and through the one engine: exact counts, regrowth at zero
with zero momentum, gradient growth on ∂L/∂(m⊙θ), appendix-G batches, baselines, exact resume."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from engine_tools import run_collecting
from torch import nn

from trainables.config import ConfigError, ExperimentConfig
from trainables.loop import run_experiment
from trainables.methods.base import Position, StepContext
from trainables.methods.dst import DST
from trainables.optim import build_optimizer
from trainables.sparse.density import kept_count, prune_rate_from_density
from trainables.sparse.masked import MaskedConv2d, MaskedLinear, masked_modules

TINY = {"method.name": "dst", "data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "48,32",
        "data.batch_size": 64, "schedule.epochs": 3, "run.max_steps_per_epoch": 6, "optim.lr": 0.05,
        "optim.nesterov": True, "method.update_period": 4, "method.density": 0.2}


def _cfg(**overrides: object) -> ExperimentConfig:
    return ExperimentConfig.from_flat({**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}})


def _train(model: nn.Module, method: DST, cfg: ExperimentConfig, steps: int, *,
           check: list[dict] | None = None) -> torch.optim.Optimizer:
    """Drive the hooks in the engine's order on fixed random data (steps 0 .. steps-1)."""
    opt = build_optimizer(cfg, method.trainable_parameters(model))
    method.on_train_start(model, Position(step=0, epoch=0, cycle=1, steps_per_epoch=steps))
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    for step in range(steps):
        ctx = StepContext(step=step, optimizer=opt, x=x, y=y)
        method.before_step(model, ctx)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        before = {n: m.mask.clone() for n, m in masked_modules(model).items()}
        if not method.before_optimizer_step(model, ctx):
            opt.step()
        method.after_step(model, ctx)
        if check is not None:
            layers = masked_modules(model)
            check.append({"step": step, "before": before,
                          "after": {n: m.mask.clone() for n, m in layers.items()},
                          "stray": sum(int((m.weight[~m.mask] != 0).sum()) for m in layers.values())})
    return opt


def _build(cfg: ExperimentConfig) -> tuple[nn.Module, DST]:
    from trainables.models import build_model

    torch.manual_seed(cfg.run.seed)
    method = DST(cfg)
    model = build_model(cfg, method.layer_factory())
    method.init_model(model)
    return model, method


@pytest.mark.parametrize(("criterion", "growth", "scope"), [
    ("magnitude", "random", "local"), ("set", "gradient", "local"), ("snip", "gradient", "local"),
    ("rsensitivity", "random", "global"), ("mest", "gradient", "global"),
])
def test_every_update_keeps_exact_active_counts(criterion: str, growth: str, scope: str) -> None:
    cfg = _cfg(method__criterion=criterion, method__growth=growth, method__scope=scope)
    model, method = _build(cfg)
    layers = masked_modules(model)
    total = sum(m.mask.numel() for m in layers.values())
    budget = kept_count(total, prune_rate_from_density(0.2))
    init = {n: int(m.mask.sum()) for n, m in layers.items()}
    assert sum(init.values()) == budget
    log: list[dict] = []
    _train(model, method, cfg, 13, check=log)
    assert method.updates == 3  # steps 4, 8, 12
    changed = 0
    for rec in log:
        after = {n: int(t.sum()) for n, t in rec["after"].items()}
        assert sum(after.values()) == budget
        if scope == "local":
            assert after == init
        changed += sum(int((rec["before"][n] != rec["after"][n]).sum()) for n in after)
        assert rec["stray"] == 0  # masked weights are exactly zero after every step
    assert changed > 0  # the topology did move


def test_regrown_weights_start_at_zero_with_zero_momentum() -> None:
    cfg = _cfg(method__growth="random", method__update_period=3)
    model, method = _build(cfg)
    opt = _train(model, method, cfg, 3)  # steps 0..2: momentum everywhere it can be
    layers = masked_modules(model)
    before = {n: m.mask.clone() for n, m in layers.items()}
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    ctx = StepContext(step=3, optimizer=opt, x=x, y=y)
    method.before_step(model, ctx)
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    assert method.before_optimizer_step(model, ctx) is False
    for n, layer in layers.items():
        grown = layer.mask & ~before[n]
        pruned = before[n] & ~layer.mask
        assert int(grown.sum()) > 0 and int(grown.sum()) == int(pruned.sum())
        buf = opt.state[layer.weight]["momentum_buffer"]
        assert bool((layer.weight[grown] == 0).all()) and bool((buf[grown] == 0).all())
        assert bool((buf[~layer.mask] == 0).all())  # nothing inactive holds momentum
        assert bool((buf[layer.mask & before[n]] != 0).any())  # survivors keep theirs
    opt.step()  # the update step's own optimizer step leaves regrown weights at zero
    method.after_step(model, ctx)
    for n, layer in layers.items():
        grown = layer.mask & ~before[n]
        assert bool((layer.weight[grown] == 0).all())


def test_gradient_growth_uses_the_effective_weights_gradient() -> None:
    """y = W x, L = Σ c ⊙ y: ∂L/∂(m⊙θ)[i, j] = c_i x_j everywhere; ∂L/∂θ is 0 where m = 0."""
    cfg = _cfg(method__growth="gradient", method__criterion="magnitude", method__update_period=1,
               method__prune_schedule="constant", method__prune_fraction=0.5)
    layer = MaskedLinear(4, 2, bias=False)
    model = nn.Sequential(layer)
    method = DST(cfg)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.9, 0.0, 0.1, 0.0], [0.0, 0.8, 0.0, 0.2]]))
    mask = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    layer.set_mask(mask)
    method.init_masks = {"0.weight": mask.clone()}
    opt = build_optimizer(cfg, method.trainable_parameters(model))
    method.on_train_start(model, Position(step=0, epoch=0, cycle=1, steps_per_epoch=10))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    c = torch.tensor([1.0, -3.0])
    ctx = StepContext(step=1, optimizer=opt)
    method.before_step(model, ctx)
    opt.zero_grad(set_to_none=True)
    (model(x) * c).sum().backward()
    # dense gradient c x^T = [[1, 2, 3, 4], [-3, -6, -9, -12]]: inactive entries (0,1) 2, (0,3) 4,
    # (1,0) -3, (1,2) -9. Magnitude prunes (0,2) .1 and (1,3) .2; the pruned ones may regrow:
    # candidates (0,1) 2, (0,2) 3, (0,3) 4, (1,0) 3, (1,2) 9, (1,3) 12 -> grow (1,3) and (1,2).
    # ∂L/∂θ is zero at every inactive entry, so it would pick by tie order: (0,1) and (0,2)/(0,3).
    assert layer.weight.grad[~mask].abs().sum() == 0
    method.before_optimizer_step(model, ctx)
    expected = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(layer.mask, expected)
    assert layer.weight[1, 2] == 0 and layer.weight[1, 3] == 0  # grown at zero (1,3 was pruned, then regrown)
    assert layer.effective_grad() is None  # the dense gradient is kept on update steps only


def test_effective_gradient_is_retained_on_update_steps_only() -> None:
    cfg = _cfg(method__growth="gradient", method__update_period=4)
    model, method = _build(cfg)
    layers = list(masked_modules(model).values())
    retained: list[int] = []
    original = DST.before_optimizer_step

    def spy(self: DST, m: nn.Module, ctx: StepContext) -> bool:
        retained.append(sum(layer.effective_grad() is not None for layer in layers))
        return original(self, m, ctx)

    DST.before_optimizer_step = spy  # type: ignore[method-assign]
    try:
        _train(model, method, cfg, 9)
    finally:
        DST.before_optimizer_step = original  # type: ignore[method-assign]
    assert [i for i, n in enumerate(retained) if n] == [4, 8]
    assert retained[4] == len(layers)


def test_update_batch_gradient_comes_from_the_extra_batch_and_leaves_batchnorm_alone() -> None:
    cfg = _cfg(method__criterion="snip", method__growth="gradient", method__update_period=1,
               method__update_batch_size=64)
    torch.manual_seed(0)
    conv = MaskedConv2d(1, 4, 3, padding=1)
    bn = nn.BatchNorm2d(4)
    fc = MaskedLinear(4 * 64, 10)
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.Flatten(), fc)
    method = DST(cfg)
    method.init_model(model)
    opt = build_optimizer(cfg, method.trainable_parameters(model))
    method.on_train_start(model, Position(step=0, epoch=0, cycle=1, steps_per_epoch=10))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    big_x, big_y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    asked: list[int] = []

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        asked.append(n)
        return big_x, big_y

    # what SNIP must see: the big batch's gradient at the current weights (BN state as now)
    probe = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(big_x), big_y).backward()
    big_grad = {n: m.weight.grad.clone() for n, m in masked_modules(model).items()}
    model.load_state_dict(probe)
    model.zero_grad(set_to_none=True)

    ctx = StepContext(step=1, optimizer=opt, x=x, y=y, sample_batch=sample)
    method.before_step(model, ctx)
    F.cross_entropy(model(x), y).backward()
    step_grad = {n: m.weight.grad.clone() for n, m in masked_modules(model).items()}
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    masks = {n: m.mask.clone() for n, m in masked_modules(model).items()}
    weights = {n: m.weight.detach().clone() for n, m in masked_modules(model).items()}
    method.before_optimizer_step(model, ctx)
    assert asked == [64]
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]
    for n, m in masked_modules(model).items():
        # pruned set = SNIP on the big batch's gradient, not the step's
        from trainables.sparse.density import pruned_count
        from trainables.sparse.dst_criteria import prune_selection

        k = pruned_count(int(masks[n].sum()), method.rho(1))
        want = prune_selection("snip", weights[n], big_grad[n], masks[n], k).view(masks[n].shape)
        # the new mask holds every survivor, none of the pruned ones except those regrown (at 0)
        assert bool(m.mask[masks[n] & ~want].all()), n
        assert bool((m.weight[want & m.mask] == 0).all()), n
        assert int((want & ~m.mask).sum()) > 0
        # the optimizer still gets the step's gradient (on the survivors)
        survivors = masks[n] & ~want
        assert torch.equal(m.weight.grad[survivors], step_grad[n][survivors])


def test_density_one_is_dense_training_and_static_keeps_its_init_mask(tmp_path: Path) -> None:
    dense = run_experiment(ExperimentConfig.from_flat(
        {k: v for k, v in TINY.items() if not k.startswith("method.")} | {"method.name": "dense"}))
    dst_full = run_experiment(_cfg(method__density=1.0))
    assert dst_full["train_loss"] == dense["train_loss"] and dst_full["test_loss"] == dense["test_loss"]
    assert dst_full["updates"] == 0  # nothing sparse to update
    static = run_experiment(_cfg(method__update_period=0))
    assert static["updates"] == 0 and static["itop"] == pytest.approx(static["density"])
    assert static["cycle/jaccard_init"] == 1.0
    dyn = run_experiment(_cfg())
    assert dyn["updates"] > 0 and dyn["itop"] > dyn["density"] and dyn["cycle/jaccard_init"] < 1.0


def test_same_seed_same_init_for_every_criterion_and_static() -> None:
    masks = []
    for over in ({}, {"method__criterion": "snip", "method__growth": "gradient"}, {"method__update_period": 0}):
        model, _ = _build(_cfg(**over))
        masks.append({n: (m.mask.clone(), m.weight.detach().clone()) for n, m in masked_modules(model).items()})
    for other in masks[1:]:
        for n in masks[0]:
            assert torch.equal(masks[0][n][0], other[n][0]) and torch.equal(masks[0][n][1], other[n][1])


def _run(cfg: ExperimentConfig, tmp: Path, resume: Path | None = None) -> tuple[list[dict], list[Path]]:
    return run_collecting(cfg, tmp, resume_from=resume)


@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_resume_across_an_update_boundary_is_bit_identical(tmp_path: Path, growth: str) -> None:
    # 6 steps per epoch, Δt = 4: updates at steps 4 (epoch 1), 8, 12 and 16 (epochs 2, 3); checkpoint
    # after epoch 1 (step 6) sits between two updates, with momentum on regrown weights reset.
    cfg = _cfg(method__growth=growth, method__criterion="mest", method__jaccard_every=1)
    full, ckpts = _run(cfg, tmp_path / "a")
    resumed, ckpts2 = _run(cfg, tmp_path / "b", resume=ckpts[0])
    assert [r["epoch"] for r in resumed] == [2, 3]
    keys = ["train_loss", "test_loss", "itop", "updates", "density", "cycle/jaccard_init"]
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in full[1:]]
    a = torch.load(ckpts[-1] / "state.pt", weights_only=True)
    b = torch.load(ckpts2[-1] / "state.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["method"]["jaccard_rows"] == b["method"]["jaccard_rows"]
    for k in a["method"]["ever"]:
        assert torch.equal(a["method"]["ever"][k], b["method"]["ever"][k])
    table = pq.read_table(ckpts[-1] / "artifacts" / "criteria_jaccard" / "cycle_01.parquet").to_pandas()
    assert sorted(table["update"].unique()) == [1, 2, 3, 4]
    assert {"magnitude", "set", "mest", "sensitivity", "rsensitivity", "snip", "random"} == set(table["a"])


def test_epoch_metrics_and_artifacts(tmp_path: Path) -> None:
    reports, ckpts = _run(_cfg(), tmp_path)
    for r in reports:
        assert r["density"] == pytest.approx(kept_count(64 * 48 + 48 * 32 + 32 * 10, 0.8) / (64 * 48 + 48 * 32 + 32 * 10))
        assert 0 < r["layer_density/net.1.weight"] < 1 and 0 < r["itop"] <= 1
        assert "dying_ratio" not in r and "k_minus_dying" not in r  # 1 - itop: logged once, as itop
    assert [r["itop"] for r in reports] == sorted(r["itop"] for r in reports)
    files = {p.relative_to(ckpts[-1]).as_posix() for p in ckpts[-1].rglob("*.parquet")}
    assert files == {"masks.parquet", "artifacts/masks/cycle_01.parquet", "artifacts/init_masks/cycle_01.parquet",
                     "artifacts/criteria_jaccard/cycle_01.parquet"}
    assert 0 < reports[-1]["cycle/jaccard_init_random"] < reports[-1]["cycle/jaccard_init"] < 1


def test_adam_state_is_reset_and_unknown_state_refused() -> None:
    cfg = _cfg(optim__name="adam", optim__lr=0.01)
    model, method = _build(cfg)
    opt = _train(model, method, cfg, 5)  # update at step 4
    for layer in masked_modules(model).values():
        for key in ("exp_avg", "exp_avg_sq"):
            assert bool((opt.state[layer.weight][key][~layer.mask] == 0).all())
    from trainables.methods.dst import _reset_state

    w = nn.Parameter(torch.ones(3))
    opt2 = torch.optim.SGD([w], lr=0.1)
    opt2.state[w]["mystery"] = torch.ones(3)
    with pytest.raises(ValueError, match="mystery"):
        _reset_state(opt2, w, torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize(("overrides", "pattern"), [
    ({"method.criterion": "grasp"}, r"method.criterion: 'grasp' is not one of magnitude, set"),
    ({"method.growth": "momentum"}, r"method.growth: 'momentum' is not one of random, gradient"),
    ({"method.density": 0.0}, r"method.density: 0.0 must be > 0"),
    ({"method.prune_fraction": 1.5}, r"method.prune_fraction: 1.5 must be <= 1"),
    ({"method.update_batch_size": 5000}, r"update_batch_size: 5000 is larger than the 1437"),
    ({"method.update_end": 3}, r"method.update_end: 3 leaves no update"),
    ({"method.scope": "layer"}, r"method.scope: 'layer' is not one of local, global"),
    ({"schedule.name": "step", "schedule.milestone_fractions": "0.5,1.2"}, r"milestone_fractions: \[0.5, 1.2\] must lie in \(0, 1\)"),
    ({"schedule.name": "step", "schedule.milestone_fractions": "0.5", "schedule.milestones": "1"}, "not both"),
])
def test_bad_dst_config_is_one_line(overrides: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        ExperimentConfig.from_flat({**TINY, **overrides})
    assert "\n" not in str(info.value)


def test_dense_layers_beyond_the_budget_fail_before_training() -> None:
    with pytest.raises(ConfigError, match="method.density: the layers kept dense"):
        run_experiment(_cfg(method__density=0.05, method__dense_first=True))


def test_step_decay_at_fractions_of_training() -> None:
    from trainables.optim import lr_factor

    s = ExperimentConfig.from_flat({"schedule.name": "step", "schedule.epochs": 10,
                                    "schedule.milestone_fractions": "0.5,0.75"}).schedule
    assert s.milestone_steps(7) == (35, 52)  # round(0.75 · 70) = 52
    kw = {"total_steps": 70, "warmup_steps": 0, "schedule": "step", "milestone_steps": s.milestone_steps(7)}
    assert [lr_factor(t, **kw) for t in (34, 35, 51, 52)] == pytest.approx([1, 0.1, 0.1, 0.01])
