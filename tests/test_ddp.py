"""The engine's DDP path without Ray: 2 gloo processes must train what 1 process trains.

With no BatchNorm (Conv-4, MLP) DDP averages the two half-batch gradients into exactly the
full-batch gradient, so scores, masks and the all-reduced metrics agree with a 1-process run
up to float summation order.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainables.config import ExperimentConfig
from trainables.loop import DistContext, run_experiment
from trainables.sparse.mask_io import read_masks

FLAT = {"data.dataset": "digits", "model.name": "conv4", "schedule.epochs": 2, "data.batch_size": 32,
        "run.max_steps_per_epoch": 6, "method.prune_rate": 0.5, "optim.lr": 0.2, "model.width": 0.25}
BN_FLAT = {**FLAT, "model.name": "resnet18", "model.width": 0.125, "schedule.epochs": 1}
# Hard iterative EP: the frozen search space (a bool buffer) and a score redraw at the boundary.
IEP_FLAT = {**{k: v for k, v in FLAT.items() if k != "method.prune_rate"}, "method.name": "iep",
            "method.cycles": 2, "method.shrinkage": 0.3, "method.pruning": "hard",
            "method.score_reset": "reinit", "schedule.epochs": 1}


def _train(out: Path, ctx: DistContext, flat: dict = FLAT) -> list[dict]:
    reports: list[dict] = []

    def reporter(metrics: dict, ckpt: Path | None) -> None:
        reports.append(dict(metrics))
        if ckpt is not None:
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(ckpt, out)

    run_experiment(ExperimentConfig.from_flat(flat), reporter=reporter, ctx=ctx)
    return reports


def _worker(rank: int, world: int, store: str, out: str, reports_path: str, flat: dict = FLAT) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        reports = _train(Path(out), DistContext(rank=rank, world_size=world), flat)
        if rank == 0:
            torch.save(reports, reports_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("flat", [FLAT, IEP_FLAT], ids=["edge_popup", "hard_iep"])
def test_two_gloo_workers_match_one_process(tmp_path: Path, flat: dict) -> None:
    single = _train(tmp_path / "single", DistContext(), flat)
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "ddp"), str(tmp_path / "r.pt"), flat),
             nprocs=2, join=True)
    ddp = torch.load(tmp_path / "r.pt")
    for a, b in zip(single, ddp, strict=True):
        for key in ("train_loss", "train_acc", "test_acc", "dying_ratio"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    s1 = torch.load(tmp_path / "single" / "state.pt", weights_only=False)["model"]
    s2 = torch.load(tmp_path / "ddp" / "state.pt", weights_only=False)["model"]
    for name in s1:
        torch.testing.assert_close(s1[name], s2[name], atol=1e-5, rtol=1e-4)
    m1, m2 = read_masks(tmp_path / "single" / "masks.parquet"), read_masks(tmp_path / "ddp" / "masks.parquet")
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    cycles = sorted(p.name for p in (tmp_path / "single" / "artifacts" / "masks").glob("cycle_*.parquet"))
    assert len(cycles) == ExperimentConfig.from_flat(flat).method.cycle_count()
    for name in cycles:
        c1 = read_masks(tmp_path / "single" / "artifacts" / "masks" / name)
        c2 = read_masks(tmp_path / "ddp" / "artifacts" / "masks" / name)
        assert all(torch.equal(c1[k], c2[k]) for k in c1), name


@pytest.mark.timeout(180)
def test_ranks_evaluate_and_save_one_model_with_batchnorm(tmp_path: Path) -> None:
    """Each rank's BatchNorm statistics absorb its own shard; eval must use rank 0's everywhere.

    The DDP-reported test loss must equal rank 0's checkpoint evaluated in one process.
    """
    from trainables.data import load_data
    from trainables.loop import build_state, epoch_steps, evaluate, load_checkpoint

    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "ddp"), str(tmp_path / "r.pt"),
                            BN_FLAT), nprocs=2, join=True)
    reported = torch.load(tmp_path / "r.pt")[-1]
    cfg = ExperimentConfig.from_flat(BN_FLAT)
    data = load_data(cfg.data, progress=False)
    state = build_state(cfg, torch.device("cpu"), epoch_steps(cfg, data))
    load_checkpoint(state, cfg, tmp_path / "ddp", torch.device("cpu"))
    alone = evaluate(state.model, data, cfg, DistContext(), torch.device("cpu"))
    assert alone["test_loss"] == pytest.approx(reported["test_loss"], rel=1e-5)
    assert alone["test_acc"] == pytest.approx(reported["test_acc"], abs=1e-9)
