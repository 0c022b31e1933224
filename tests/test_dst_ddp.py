"""DST under DDP (2 gloo processes, no Ray) trains what one process trains.

DDP averages ∇θ but not the retained ∂L/∂(m⊙θ) nor the gradient of the appendix-G update
batch: the method averages those itself, so the ranks' masks stay identical and equal to a
single process's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_ddp import _train, _worker  # the engine's 2-process harness, shared with EP's DDP test

from trainables.loop import DistContext
from trainables.sparse.mask_io import read_masks

FLAT = {"method.name": "dst", "data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "48,32",
        "data.batch_size": 32, "schedule.epochs": 2, "run.max_steps_per_epoch": 6, "optim.lr": 0.05,
        "method.update_period": 3, "method.density": 0.2, "method.criterion": "snip",
        "method.growth": "gradient", "data.augment": False}
UPDATE_BATCH = {**FLAT, "method.update_batch_size": 128, "method.criterion": "mest"}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("flat", [FLAT, UPDATE_BATCH], ids=["step_batch", "update_batch"])
def test_two_gloo_workers_match_one_process(tmp_path: Path, flat: dict) -> None:
    single = _train(tmp_path / "single", DistContext(), flat)
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "ddp"), str(tmp_path / "r.pt"), flat),
             nprocs=2, join=True)
    ddp = torch.load(tmp_path / "r.pt")
    assert single[-1]["updates"] == 3
    for a, b in zip(single, ddp, strict=True):
        for key in ("train_loss", "test_acc", "itop", "density"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    m1, m2 = read_masks(tmp_path / "single" / "masks.parquet"), read_masks(tmp_path / "ddp" / "masks.parquet")
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
