"""IMP through the real CLI: `python -m orchestrator.sweep`, real local Ray, SQLite MLflow. One
short sweep shared by the tests of this module (one trial, to stay within the CI budget:
LeNet-300-100 on digits with the repellent loss and the LMC copy, 2 rounds of 1 epoch of 3
steps): the per-round comparison of IMP and its reinit baseline is one metric query, and the
round artifacts (masks, distance matrix, histograms, interpolation curves) are in MLflow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fault_tools import (
    end_group,
    experiment_state,
    in_session,
    results_of,
    run_sweep,
    start_sweep,
    wait_for,
)
from mlflow import MlflowClient

from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG
from trainables.metrics.distances import distance_matrix
from trainables.sparse.mask_io import read_masks

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
# imp_weight_decay pinned to one point (imp_quick's variants would make 2 trials), on digits
SETS = ["data.dataset=digits", "model.name=mlp", "model.mlp_hidden=300,100", "optim.weight_decay=0",
        "method.rounds=2", "schedule.epochs=1", "run.max_steps_per_epoch=20", "data.batch_size=32", "method.lmc=true",
        "method.lmc_points=3", "method.repel=all"]
ROUNDS = [1, 2]  # every phase of round r (copy, reinit, imp) logs at step r


@pytest.fixture(scope="module")
def imp_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, list, str, Path, Path]:
    storage = tmp_path_factory.mktemp("imp") / "runs"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *imp_args(storage, "imp")], cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        print(proc.stdout[-5000:], proc.stderr[-5000:])
    assert proc.returncode == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{storage.resolve()}/mlflow.db")
    exp = client.get_experiment_by_name("imp")
    parent, = client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    children = list(iter_child_runs(client, exp.experiment_id, parent.info.run_id))
    return client, children, proc.stdout, tmp_path_factory.mktemp("dl"), storage / "tune" / "imp"


def imp_args(storage: Path, name: str) -> list[str]:
    args = ["--space", "imp_weight_decay", "--storage", str(storage), "--name", name, "--experiment", name]
    for item in SETS:
        args += ["--set", item]
    return args


def test_sweep_prints_the_per_round_table(imp_sweep: tuple) -> None:
    _, children, out, _, _ = imp_sweep
    assert len(children) == 1
    assert "Per cycle" in out and "cycle/reinit_test_acc" in out and "cycle/distance_prev" in out


def test_imp_and_reinit_per_round_in_one_query(imp_sweep: tuple) -> None:
    client, children, _, _, _ = imp_sweep
    for run in children:
        rid = run.info.run_id
        history = {key: {m.step: m.value for m in client.get_metric_history(rid, key)}
                   for key in ("cycle/test_acc", "cycle/reinit_test_acc", "cycle/reinit_train_acc", "cycle/density",
                               "cycle/instability", "cycle/copy_test_acc")}
        assert sorted(history["cycle/test_acc"]) == ROUNDS
        assert sorted(history["cycle/reinit_test_acc"]) == [2]  # round 1 is dense: no reinit
        assert sorted(history["cycle/reinit_train_acc"]) == [2]
        assert sorted(history["cycle/copy_test_acc"]) == ROUNDS
        assert history["cycle/density"][2] == pytest.approx(0.8, abs=1e-3)
        assert sorted(history["cycle/instability"]) == ROUNDS
        # per epoch, test_acc is the ticket's training (epochs 2 and 5); the copy's and the
        # reinit's epochs are their own curves
        epochs = [m.step for m in client.get_metric_history(rid, "test_acc")]
        assert epochs == [2, 5]
        assert [m.step for m in client.get_metric_history(rid, "reinit_test_acc")] == [4]
        assert sorted(m.step for m in client.get_metric_history(rid, "cycle/repel_loss")) == [2]  # round 2 only


def test_round_artifacts_are_in_mlflow(imp_sweep: tuple) -> None:
    client, children, _, dl, _ = imp_sweep
    run = children[0]
    dest = dl / run.info.run_id
    dest.mkdir()
    masks = [read_masks(client.download_artifacts(run.info.run_id, f"masks/cycle_{c:02d}.parquet", str(dest)))
             for c in ROUNDS]
    kept = [sum(int(m.sum()) for m in ms.values()) for ms in masks]
    total = sum(m.numel() for m in masks[0].values())
    assert kept == [total, total - -(-total // 5)]  # ⌈0.2·n⌉ removed
    table = pq.read_table(client.download_artifacts(run.info.run_id, "distances/cycle_02.parquet", str(dest)))
    labels, matrix = distance_matrix(table, "imp")
    assert labels == ["r01", "r02", "init"] and 0 <= matrix[0, 1] <= 1
    for name in ("histograms", "lmc"):
        assert pq.read_table(client.download_artifacts(run.info.run_id, f"{name}/cycle_02.parquet", str(dest))).num_rows


def without_trial_ids(table: Path) -> list[str]:
    """The results table's lines with the trial column (its first) cut off."""
    return [line.partition(",")[2] for line in table.read_text().splitlines()]


@pytest.mark.timeout(420)
def test_driver_killed_mid_round_resumes_quietly_to_the_same_table(imp_sweep: tuple, tmp_path: Path) -> None:
    """SIGKILL of the driver in round 2, with Tune's older recorded checkpoints deleted after its
    last saved state: `--resume` prints no traceback and no ERROR, and its results table equals
    the uninterrupted sweep's byte for byte (trial ids aside)."""
    *_, reference_dir = imp_sweep
    storage = tmp_path / "runs"
    sweep_dir = storage / "tune" / "cut"
    proc = start_sweep(*imp_args(storage, "cut"), log=tmp_path / "first.log")
    try:
        def in_round_two() -> tuple[Path, int] | None:
            for trial_dir in sweep_dir.glob("trial_*"):
                rows = results_of(trial_dir)
                if rows and rows[-1].get("epoch", 0) >= 2 and in_session(int(rows[-1]["pid"]), proc.pid):
                    return trial_dir, int(rows[-1]["pid"])
            return None

        trial_dir, pid = wait_for("the trial in round 2", in_round_two, 240, proc, tmp_path / "first.log",
                                  poll_s=0.02)
        os.kill(pid, signal.SIGSTOP)  # frozen until Tune has saved a state that records it running
        wait_for("Tune's state with the trial running", lambda: any(
            t["status"] == "RUNNING" and t["last_result"].get("epoch", 0) >= 2
            for t in experiment_state(sweep_dir).values()), 120, proc, tmp_path / "first.log")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        end_group(proc)
    checkpoints = sorted(trial_dir.glob("checkpoint_*"))
    assert len(checkpoints) >= 2, checkpoints
    for older in checkpoints[:-1]:  # deleted by Tune after its last saved state
        shutil.rmtree(older)

    code, out = run_sweep("--storage", str(storage), "--resume", "cut", log=tmp_path / "resume.log")
    assert code == 0, out[-4000:]
    assert "Traceback" not in out and "ERROR" not in out, out[-6000:]
    assert without_trial_ids(sweep_dir / "results.csv") == without_trial_ids(reference_dir / "results.csv")
