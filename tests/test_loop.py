"""The training engine: LR schedule formula, determinism, exact checkpoint restore."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from engine_tools import run_collecting

from trainables.config import ExperimentConfig
from trainables.loop import run_experiment
from trainables.optim import lr_factor

TINY = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "32", "schedule.epochs": 3,
        "data.batch_size": 64, "run.max_steps_per_epoch": 5, "method.prune_rate": 0.5, "optim.lr": 0.2}


def test_warmup_then_cosine_by_hand() -> None:
    kw = dict(total_steps=10, warmup_steps=2, schedule="cosine")
    assert lr_factor(0, **kw) == pytest.approx(0.5)  # (0+1)/2
    assert lr_factor(1, **kw) == pytest.approx(1.0)
    assert lr_factor(2, **kw) == pytest.approx(1.0)  # cos(0)
    assert lr_factor(6, **kw) == pytest.approx(0.5)  # 0.5 (1 + cos(pi 4/8))
    assert lr_factor(4, **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))
    assert lr_factor(10, **kw) == pytest.approx(0.0)


def test_step_schedule_by_hand() -> None:
    kw = dict(total_steps=100, warmup_steps=0, schedule="step", milestone_steps=(30, 60), gamma=0.1)
    assert [lr_factor(s, **kw) for s in (0, 29, 30, 59, 60, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(5, total_steps=10, warmup_steps=0, schedule="constant") == 1.0


def _run(cfg: ExperimentConfig, tmp: Path, resume: Path | None = None) -> tuple[list[dict], list[Path]]:
    return run_collecting(cfg, tmp, resume_from=resume)


def _scores(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt / "state.pt", weights_only=False)
    return state["model"]


def test_cpu_runs_are_deterministic_and_resume_exactly(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_flat(TINY)
    full, ckpts = _run(cfg, tmp_path / "a")
    again, ckpts2 = _run(cfg, tmp_path / "b")
    assert [r["train_loss"] for r in full] == [r["train_loss"] for r in again]
    # stop after epoch 1, resume from its checkpoint: the rest must be bit-identical
    resumed, ckpts3 = _run(cfg, tmp_path / "c", resume=ckpts[0])
    assert [r["epoch"] for r in resumed] == [2, 3]
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in full[1:]]
    assert [r["dying_ratio"] for r in resumed] == [r["dying_ratio"] for r in full[1:]]
    final_a, final_c = _scores(ckpts[-1]), _scores(ckpts3[-1])
    assert final_a.keys() == final_c.keys()
    for k in final_a:
        assert torch.equal(final_a[k], final_c[k]), k


def test_reports_every_epoch_with_metrics_and_files(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_flat({**TINY, "run.eval_every": 2})
    reports, ckpts = _run(cfg, tmp_path)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert "test_acc" not in reports[0] and "test_acc" in reports[1] and "test_acc" in reports[2]
    assert all(0.0 <= r["dying_ratio"] <= 0.5 for r in reports)
    assert all(r["k_minus_dying"] == pytest.approx(0.5 - r["dying_ratio"]) for r in reports)
    last = ckpts[-1]
    assert {p.name for p in last.iterdir()} == {"state.pt", "config.json", "masks.parquet", "artifacts",
                                                "manifest.json", "reports.json"}
    # the one cycle's end: its mask (the final one), score ranks and visit counts
    assert sorted(p.relative_to(last / "artifacts").as_posix() for p in (last / "artifacts").rglob("*.parquet")) \
        == ["masks/cycle_01.parquet", "ranks/cycle_01.parquet", "visits/cycle_01.parquet"]
    assert (last / "artifacts/masks/cycle_01.parquet").read_bytes() == (last / "masks.parquet").read_bytes()
    assert "artifacts" not in {p.name for p in ckpts[0].iterdir()}  # nothing before the cycle ends
    assert ExperimentConfig.from_json((ckpts[-1] / "config.json").read_text()) == cfg


def test_resume_refuses_another_configs_checkpoint(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_flat(TINY)
    _, ckpts = _run(cfg, tmp_path / "a")
    other = cfg.with_overrides({"optim.lr": 0.3})
    with pytest.raises(ValueError, match="belongs to config"):
        run_experiment(other, resume_from=ckpts[0])


@pytest.mark.parametrize("optim", ["sgd", "adam", "lars"])
def test_each_optimizer_trains_dense_and_supermask(optim: str) -> None:
    """Training means the loss falls: 3 epochs cut it by a fifth and beat chance (0.1) by far
    (measured: 14-76% lower, accuracy 0.60-0.88). An LR of ~1e-12 would leave it at ln 10."""
    lr = {"sgd": 0.1, "adam": 0.01, "lars": 5.0}[optim]  # LARS scales steps by its trust ratio
    for method in ("edge_popup", "dense"):
        overrides = {**TINY, "optim.name": optim, "method.name": method, "schedule.name": "constant",
                     "optim.lr": lr}
        if method == "dense":
            overrides.pop("method.prune_rate")
        reports: list[dict] = []
        run_experiment(ExperimentConfig.from_flat(overrides), reporter=lambda m, _, r=reports: r.append(m))
        first, last = reports[0]["train_loss"], reports[-1]["train_loss"]
        assert last < 0.8 * first, (optim, method, first, last)
        assert reports[-1]["test_acc"] > 0.4, (optim, method)


@pytest.mark.parametrize(("schedule", "warmup", "expect"), [
    # reported after each epoch: the LR of the next step, peak 0.2, 3 epochs of 5 steps each
    ("cosine", 0, [0.2 * 0.5 * (1 + math.cos(math.pi * 5 / 15)),  # 0.15 after step 5 of 15
                   0.2 * 0.5 * (1 + math.cos(math.pi * 10 / 15)), 0.0]),
    ("cosine", 1, [0.2, 0.2 * 0.5 * (1 + math.cos(math.pi * 5 / 10)), 0.0]),  # warm-up: 5 steps
    ("step", 0, [0.2, 0.02, 0.02]),  # milestone at epoch 2 = step 10
])
def test_reported_lr_follows_the_schedule_by_hand(schedule: str, warmup: int, expect: list[float]) -> None:
    """Epochs become steps in build_scheduler (steps per epoch = 5 here): hand values."""
    overrides = {**TINY, "schedule.name": schedule, "schedule.warmup_epochs": warmup}
    if schedule == "step":
        overrides["schedule.milestones"] = "2"
    reports: list[dict] = []
    run_experiment(ExperimentConfig.from_flat(overrides), reporter=lambda m, _: reports.append(m))
    assert [r["step"] for r in reports] == [5, 10, 15]
    assert [r["lr"] for r in reports] == pytest.approx(expect, abs=1e-12)


def _one_step(optim: dict, p0: list[float], grad: list[float], groups_extra: dict | None = None) -> torch.Tensor:
    from trainables.optim import build_optimizer

    cfg = ExperimentConfig.from_flat({f"optim.{k}": v for k, v in optim.items()})
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = build_optimizer(cfg, [{"params": [p], **(groups_extra or {})}])
    p.grad = torch.tensor(grad, dtype=torch.float64)
    opt.step()
    return p.detach()


def test_sgd_step_by_hand() -> None:
    # g' = g + wd p = [0.5 + 0.01, 0.5 - 0.02]; first momentum buffer = g'; p -= lr g'
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}
    assert _one_step(sgd, [1.0, -2.0], [0.5, 0.5]).tolist() == pytest.approx([0.949, -2.048])
    # Nesterov: p -= lr (g' + 0.9 g')
    nest = _one_step({**sgd, "nesterov": True}, [1.0, -2.0], [0.5, 0.5])
    assert nest.tolist() == pytest.approx([1 - 0.1 * 1.9 * 0.51, -2 - 0.1 * 1.9 * 0.48])
    # a group the method exempts from decay keeps wd = 0
    exempt = _one_step(sgd, [1.0, -2.0], [0.5, 0.5], {"weight_decay": 0.0})
    assert exempt.tolist() == pytest.approx([0.95, -2.05])


def test_adam_first_step_moves_each_coordinate_by_lr() -> None:
    # bias-corrected first Adam step: m/sqrt(v) = sign(g), so |Δp| = lr (eps negligible)
    p = _one_step({"name": "adam", "lr": 0.01, "weight_decay": 0.0}, [1.0, -2.0], [0.3, -4.0])
    assert p.tolist() == pytest.approx([0.99, -1.99], abs=1e-7)


def _adam_by_hand(p: list[float], grads: list[list[float]], lr: float, wd: float) -> list[float]:
    """torch's Adam (L2 decay added to the gradient), betas (0.9, 0.999), eps 1e-8."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    for t, g in enumerate(grads, start=1):
        for i in range(len(p)):
            gi = g[i] + wd * p[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            p[i] -= lr * (m[i] / (1 - b1**t)) / (math.sqrt(v[i] / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("wd", [0.0, 0.5])
def test_adam_two_steps_by_hand(wd: float) -> None:
    """The second step uses the moment estimates (betas) and weight decay enters the gradient."""
    from trainables.optim import build_optimizer

    cfg = ExperimentConfig.from_flat({"optim.name": "adam", "optim.lr": 0.01, "optim.weight_decay": wd})
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = build_optimizer(cfg, [{"params": [p]}])
    grads = [[0.3, -4.0], [-0.2, 1.0]]
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    expect = _adam_by_hand([1.0, -2.0], grads, 0.01, wd)
    assert p.detach().tolist() == pytest.approx(expect, rel=1e-12, abs=1e-12)
    if wd:  # a different value than without decay, so the test sees a dropped weight_decay
        assert expect != pytest.approx(_adam_by_hand([1.0, -2.0], grads, 0.01, 0.0), abs=1e-6)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_lars_step_by_hand(wd: float) -> None:
    # trust = eta ||w|| / (||g|| + wd ||w||); p -= lr * trust * (g + wd w)  (first step: buffer = update)
    w, g, lr, eta = [3.0, 4.0], [0.0, 1.0], 0.5, 0.001
    trust = eta * 5.0 / (1.0 + wd * 5.0)
    expect = [w[i] - lr * trust * (g[i] + wd * w[i]) for i in range(2)]
    got = _one_step({"name": "lars", "lr": lr, "momentum": 0.9, "weight_decay": wd,
                     "lars_trust_coeff": eta}, w, g)
    assert got.tolist() == pytest.approx(expect)


def test_set_determinism_sets_torch_mode_without_importing_the_compiler() -> None:
    """torch's deterministic mode as use_deterministic_algorithms(mode, warn_only=True) sets it,
    in a trial process that never imports torch._dynamo (about 2 s per process)."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "import trainables.tune\n"
            "from trainables.loop import set_determinism\n"
            "set_determinism(True, torch.device('cpu'))\n"
            "assert torch.are_deterministic_algorithms_enabled()\n"
            "assert torch.is_deterministic_algorithms_warn_only_enabled()\n"
            "set_determinism(False, torch.device('cpu'))\n"
            "assert not torch.are_deterministic_algorithms_enabled()\n"
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'\n")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
