"""IMP through the engine on a tiny MLP: rounds prune exactly 20% of the remaining weights, resets
are bit-exact (init and rewind point), masked weights stay zero under momentum and weight decay,
the reinit baseline keeps the mask and not the weights, the repellent term is on only from round
2, the copy trains on another data order, per-round metrics and artifacts, resume mid-round
bit-identical, ResNet-50 one-shot through the layer factory."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from engine_tools import run_by_epoch

from trainables.config import ConfigError, ExperimentConfig
from trainables.keys import TIMING_KEYS
from trainables.loop import run_experiment
from trainables.methods.imp import Imp, imp_cycle_table
from trainables.metrics.distances import distance_matrix
from trainables.models import build_model
from trainables.sparse.mask_io import read_masks
from trainables.sparse.masked import masked_modules

BASE = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "32", "data.batch_size": 64,
        "run.max_steps_per_epoch": 3, "schedule.epochs": 2, "optim.name": "sgd", "optim.lr": 0.2,
        "optim.momentum": 0.9, "optim.weight_decay": 0.05, "method.name": "imp", "method.rounds": 3,
        "run.device": "cpu"}
PRUNABLE = 64 * 32 + 32 * 10


def cfg_of(**overrides: object) -> ExperimentConfig:
    flat = {**BASE, **{k.replace("__", "."): v for k, v in overrides.items()}}
    return ExperimentConfig.from_flat({k: v for k, v in flat.items() if v is not ...})


run = run_by_epoch


class Spy(Imp):
    """Records the model right after each boundary and each step's weights (for rewind checks)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.after_boundary: dict[int, dict[str, torch.Tensor]] = {}
        self.after_steps: dict[int, dict[str, torch.Tensor]] = {}

    def begin_cycle(self, model, cycle):  # noqa: ANN001, ANN201
        start = super().begin_cycle(model, cycle)
        self.after_boundary[cycle] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.starts = {**getattr(self, "starts", {}), cycle: start}
        return start

    def after_step(self, model, ctx):  # noqa: ANN001, ANN201
        super().after_step(model, ctx)
        self.after_steps[ctx.step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def spy_run(cfg: ExperimentConfig, monkeypatch: pytest.MonkeyPatch) -> tuple[Spy, list[dict]]:
    import trainables.loop as loop

    made: list[Spy] = []

    def build(c: ExperimentConfig) -> Spy:
        made.append(Spy(c))
        return made[-1]

    monkeypatch.setattr(loop, "build_method", build)
    reports: list[dict] = []
    run_experiment(cfg, reporter=lambda m, _: reports.append(dict(m)))
    return made[0], reports


def last_round_reports(reports: list[dict]) -> list[dict]:
    return [r for r in reports if "cycle/density" in r]


# ----- config --------------------------------------------------------------------------------


def test_cycles_are_rounds_times_phases_without_a_dense_reinit() -> None:
    c = cfg_of(method__lmc=True).method
    assert imp_cycle_table(c) == ((1, "copy"), (1, "imp"), (2, "copy"), (2, "reinit"), (2, "imp"),
                                  (3, "copy"), (3, "reinit"), (3, "imp"))
    assert cfg_of(method__reinit_baseline=False).total_epochs == 3 * 2
    assert cfg_of().total_epochs == (3 * 2 - 1) * 2


@pytest.mark.parametrize(("over", "message"), [
    ({"method__one_shot_sparsity": 0.3}, "method.rounds: one-shot pruning"),
    ({"method__rewind_epoch": 1, "method__rewind_step": 2}, "method.rewind_step: set rewind_epoch or rewind_step"),
    ({"method__rewind_epoch": 2}, "method.rewind_epoch: 2 must be smaller than schedule.epochs (2)"),
    ({"method__rewind_step": 6}, "method.rewind_step: 6 must be smaller than the 6 optimizer steps of round 1"),
    ({"method__repel": "all", "method__rounds": 1}, "method.repel: all repels earlier rounds' optima"),
    ({"method__prune_fraction": 1.0}, "method.prune_fraction: 1.0 must be < 1"),
])
def test_bad_imp_values_name_key_and_allowed(over: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cfg_of(**over)


# ----- rounds ----------------------------------------------------------------------------------


def test_each_round_removes_exactly_20_percent_of_the_remaining(tmp_path: Path) -> None:
    cfg = cfg_of(method__rounds=4, method__reinit_baseline=False, run__checkpoint_every=100, schedule__epochs=1)
    reports, ckpts = run(cfg, tmp_path)
    last = ckpts[max(ckpts)]
    remaining = PRUNABLE
    previous = None
    for r in range(1, 5):
        masks = read_masks(last / "artifacts" / "masks" / f"cycle_{r:02d}.parquet")
        kept = sum(int(m.sum()) for m in masks.values())
        assert kept == remaining, (r, kept, remaining)
        if previous is not None:
            assert all(not (masks[n] & ~previous[n]).any() for n in masks), "a pruned weight came back"
        previous, remaining = masks, remaining - math.ceil(0.2 * remaining - 1e-9)
    ratios = [r["cycle/density"] for r in last_round_reports(reports)]
    assert ratios == [1.0, 1894 / PRUNABLE, 1515 / PRUNABLE, 1212 / PRUNABLE]


def test_prune_biases_ranks_biases_with_weights_and_keeps_them_zero(tmp_path: Path) -> None:
    cfg = cfg_of(method__rounds=3, method__reinit_baseline=False, method__prune_biases=True,
                 run__checkpoint_every=100, optim__weight_decay=0.5)
    _, ckpts = run(cfg, tmp_path)
    last = ckpts[max(ckpts)]
    remaining = PRUNABLE + 32 + 10
    for r in range(1, 4):
        masks = read_masks(last / "artifacts" / "masks" / f"cycle_{r:02d}.parquet")
        assert set(masks) == {"net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias"}
        assert sum(int(m.sum()) for m in masks.values()) == remaining
        remaining -= math.ceil(0.2 * remaining - 1e-9)
    model = torch.load(last / "state.pt", weights_only=True)["model"]
    for name, mask in masks.items():
        assert torch.all(model[name][~mask] == 0), name
    assert not all(m.all() for n, m in masks.items() if n.endswith("bias")), "no bias was pruned"


def test_optima_on_disk_give_the_same_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cfg_of(method__rounds=2, method__repel="all", schedule__epochs=1)
    memory, _ = run(cfg, tmp_path / "memory")
    spy, disk = spy_run(cfg_of(method__rounds=2, method__repel="all", schedule__epochs=1, method__optima_store="disk"),
                        monkeypatch)
    drop = TIMING_KEYS
    assert [{k: v for k, v in r.items() if k not in drop} for r in memory] == \
           [{k: v for k, v in r.items() if k not in drop} for r in disk]
    files = sorted(p.name for p in spy.spill_dir.iterdir())
    assert files == sorted(f"{kind}-r{r:02d}-{layer}.bin" for layer in ("net.1.weight", "net.3.weight")
                           for kind, rounds in (("imp", (1, 2)), ("reinit", (2,))) for r in rounds)
    assert (spy.spill_dir / "imp-r01-net.1.weight.bin").stat().st_size == 64 * 32 * 4


def test_reset_equals_the_saved_init_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cfg_of(method__rounds=2, method__reinit_baseline=False)
    spy, _ = spy_run(cfg, monkeypatch)
    after = spy.after_boundary[2]
    for key, init in spy.init_state.items():
        if key.endswith("mask"):
            continue
        mask = after.get(key.removesuffix("weight") + "mask") if key.endswith("weight") else None
        expected = init if mask is None else init * mask
        assert torch.equal(after[key], expected), key
    assert spy.starts[2].lr_offset_steps == 0 and spy.starts[2].reset_optimizer


def test_rewind_resets_to_the_weights_of_step_t(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cfg_of(method__rounds=2, method__reinit_baseline=False, method__rewind_step=2)
    spy, _ = spy_run(cfg, monkeypatch)
    at_t = spy.after_steps[1]  # after 2 optimizer steps (global steps 0, 1) of round 1
    after = spy.after_boundary[2]
    for key, value in at_t.items():
        if key.endswith("mask"):
            continue
        mask = after.get(key.removesuffix("weight") + "mask") if key.endswith("weight") else None
        assert torch.equal(after[key], value if mask is None else value * mask), key
    assert not torch.equal(at_t["net.1.weight"], spy.init_state["net.1.weight"])
    assert spy.starts[2].lr_offset_steps == 2


def test_masked_weights_stay_exactly_zero_under_momentum_and_weight_decay(tmp_path: Path) -> None:
    cfg = cfg_of(method__rounds=2, method__reinit_baseline=False, optim__weight_decay=0.5, optim__momentum=0.9)
    _, ckpts = run(cfg, tmp_path)
    blob = torch.load(ckpts[max(ckpts)] / "state.pt", weights_only=True)
    model, opt = blob["model"], blob["optimizer"]
    checked = 0
    for key, mask in model.items():
        if key.endswith("mask"):
            weight = model[key.removesuffix("mask") + "weight"]
            assert (~mask).any() and torch.all(weight[~mask] == 0), key
            checked += 1
    assert checked == 2
    assert any("momentum_buffer" in s for s in opt["state"].values())


def test_reinit_keeps_the_mask_but_not_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cfg_of(method__rounds=2)
    spy, reports = spy_run(cfg, monkeypatch)
    # cycles: (1, imp), (2, reinit), (2, imp)
    reinit, imp = spy.after_boundary[2], spy.after_boundary[3]
    for name in ("net.1", "net.3"):
        mask = reinit[f"{name}.mask"]
        assert torch.equal(mask, imp[f"{name}.mask"]) and (~mask).any()
        w_re, w_imp = reinit[f"{name}.weight"], imp[f"{name}.weight"]
        assert torch.all(w_re[~mask] == 0)
        assert torch.equal(w_imp, spy.init_state[f"{name}.weight"] * mask)
        assert (w_re[mask] != w_imp[mask]).float().mean() > 0.99  # fresh weights, not θ_0
    summary = last_round_reports(reports)[-1]
    # the reinit baseline reports at its round's step, under its own names, once
    assert summary["cycle_step"] == 2 and "cycle/reinit_test_acc" not in summary
    assert reports[3]["cycle_step"] == 2 and reports[3]["phase"] == 2
    assert 0 < reports[3]["cycle/reinit_test_acc"] <= 1 and "cycle/test_acc" not in reports[3]
    assert "reinit_test_acc" in reports[3] and "test_acc" not in reports[3]  # per epoch too


def test_repellent_term_only_from_round_2_and_lambda_zero_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, float]] = []
    original = Imp.loss_term

    def spy_term(self, model, ctx):  # noqa: ANN001, ANN202
        out = original(self, model, ctx)
        seen.append((ctx.cycle, float("nan") if out is None else float(out.detach())))
        return out

    def by_cycle() -> dict[int, list[float]]:
        out: dict[int, list[float]] = {}
        for c, v in seen:
            out.setdefault(c, []).append(v)
        return out

    monkeypatch.setattr(Imp, "loss_term", spy_term)
    run_experiment(cfg_of(method__rounds=2, method__reinit_baseline=False, method__repel="all"))
    terms = by_cycle()
    # one call per step: 2 rounds (no reinit cycles) of 2 epochs x 3 steps
    assert sorted(terms) == [1, 2] and len(terms[1]) == len(terms[2]) == 6
    assert all(math.isnan(v) for v in terms[1])  # round 1: no earlier optimum, no term
    assert all(0 < v <= 2.0 + 1e-6 for v in terms[2])  # λ_r = 2 times a squared cosine
    seen.clear()
    run_experiment(cfg_of(method__rounds=2, method__reinit_baseline=False, method__repel="all",
                          method__repel_lambda=0.0))
    terms = by_cycle()
    assert sorted(terms) == [1, 2] and len(terms[1]) == len(terms[2]) == 6
    assert all(math.isnan(v) for v in terms[1])
    assert terms[2] == [0.0] * 6


def test_copy_trains_from_the_same_state_on_another_data_order(tmp_path: Path) -> None:
    cfg = cfg_of(method__rounds=2, method__lmc=True, method__lmc_points=5, run__checkpoint_every=100)
    reports, ckpts = run(cfg, tmp_path)
    summary = last_round_reports(reports)
    assert [s["cycle_step"] for s in summary] == [1, 2]
    assert all("cycle/instability" in s and s["cycle/instability"] >= 0 for s in summary)
    assert "cycle/successive_instability" in summary[1] and "cycle/successive_instability" not in summary[0]
    last = ckpts[max(ckpts)] / "artifacts"
    lmc = pq.read_table(last / "lmc" / "cycle_02.parquet").to_pylist()
    copy = [r["error"] for r in lmc if r["path"] == "copy"]
    assert len(copy) == 5 and max(copy) - (copy[0] + copy[-1]) / 2 == pytest.approx(summary[1]["cycle/instability"])
    # the copy trained on another order: its endpoint differs from IMP's; with the run's own data
    # seed it is the IMP training itself (same state, same order per epoch of the round)
    assert reports[1]["cycle/copy_train_loss"] != reports[3]["cycle/train_loss"]
    same, _ = run(cfg_of(method__rounds=1, method__lmc=True, method__lmc_points=3, method__copy_data_seed=0),
                  tmp_path / "same")
    assert same[1]["cycle/copy_train_loss"] == same[3]["cycle/train_loss"]
    assert same[3]["cycle/instability"] == 0
    dist = pq.read_table(last / "distances" / "cycle_02.parquet")
    labels, m = distance_matrix(dist, "imp")
    assert labels == ["r01", "r02", "init"] and 0 < m[0, 1] < 1 and summary[1]["cycle/distance_prev"] == m[0, 1]
    labels, m = distance_matrix(dist, "reinit")
    assert labels == ["r02", "init"] and 0 < m[0, 1] < 2
    hist = pq.read_table(last / "histograms" / "cycle_02.parquet")
    assert sum(hist.column("count").to_pylist()) == round(summary[1]["cycle/density"] * PRUNABLE)


@pytest.mark.parametrize("variant", [
    {"method__lmc": True, "method__lmc_points": 3},
    {"method__repel": "all", "method__rewind_step": 2},
    {"method__repel": "previous", "method__optima_store": "disk", "method__prune_biases": True},
])
def test_resume_mid_round_is_bit_identical(tmp_path: Path, variant: dict) -> None:
    cfg = cfg_of(method__rounds=2, run__checkpoint_every=1, **variant)
    full, ckpts = run(cfg, tmp_path / "full")
    end = max(ckpts)
    for at in (3, 4, end - 1):  # mid a cycle, a cycle's end, mid round 2's IMP cycle
        resumed, rckpts = run(cfg, tmp_path / f"from{at}", resume=ckpts[at])
        assert [r["epoch"] for r in resumed] == list(range(at + 1, end + 1))
        for a, b in zip(full[at:], resumed, strict=True):
            assert {k: v for k, v in a.items() if k not in TIMING_KEYS} == \
                   {k: v for k, v in b.items() if k not in TIMING_KEYS}
        a_state = torch.load(ckpts[end] / "state.pt", weights_only=True)
        b_state = torch.load(rckpts[end] / "state.pt", weights_only=True)
        for k in a_state["model"]:
            assert torch.equal(a_state["model"][k], b_state["model"][k]), k
        for rel in sorted(p.relative_to(ckpts[end]) for p in (ckpts[end] / "artifacts").rglob("*.parquet")):
            assert (ckpts[end] / rel).read_bytes() == (rckpts[end] / rel).read_bytes(), rel


# ----- layers and architectures -----------------------------------------------------------------


def test_shortcuts_are_not_pruned_unless_asked_and_bn_affine_is_a_knob() -> None:
    over = {"model__name": "resnet18", "model__width": 0.125, "data__dataset": "digits", "model__mlp_hidden": ...}
    method = Imp(cfg_of(**over))
    model = build_model(method.cfg, method.layer_factory())
    all_layers = masked_modules(model)
    assert any("shortcut" in n for n in all_layers)
    assert not any("shortcut" in n for n in method.prunable(model))
    assert len(Imp(cfg_of(**over, method__prune_shortcuts=True)).prunable(model)) == len(all_layers)
    nonaffine = Imp(cfg_of(**over, method__affine_bn=False))
    bns = [m for m in build_model(nonaffine.cfg, nonaffine.layer_factory()).modules()
           if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.weight is None for m in bns)


def test_resnet50_one_shot_30_percent_through_the_layer_factory() -> None:
    cfg = ExperimentConfig.from_flat({"method.name": "imp", "method.rounds": 2, "method.one_shot_sparsity": 0.3,
                                      "model.name": "resnet50", "data.dataset": "cifar10",
                                      "data.data_dir": "/nonexistent", "data.batch_size": 2, "run.device": "cpu"})
    method = Imp(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, method.layer_factory())
    method.init_model(model)
    prunable = method.prunable(model)
    assert not any("downsample" in n for n in prunable) and len(prunable) < len(masked_modules(model))
    total = sum(layer.weight.numel() for layer in prunable.values())
    method._prune(model, 2)
    kept = sum(int(layer.mask.sum()) for layer in prunable.values())
    assert kept == total - math.floor(0.3 * total)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
