"""`python -m orchestrator.sweep` end to end: real local Ray, real MLflow (SQLite and a server).

Each test runs the CLI as a subprocess, as a user would, then reads back what MLflow holds.
Trials are tiny (digits, 2-3 epochs of a few steps) so the module fits in a few minutes on
2 cores; the mechanics (Tune, DDP, tracking, resume) are the same as for a paper-sized run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import MlflowServer
from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG, PARENT_TAG
from trainables.checkpoint_io import verify_checkpoint
from trainables.config import ExperimentConfig
from trainables.sparse.density import kept_count
from trainables.sparse.mask_io import read_masks
from trainables.sparse.supermask import topk_mask

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "run.max_steps_per_epoch=4", "--set", "schedule.epochs=2", "--set", "data.batch_size=32"]


def sweep(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, 130):
        print(proc.stdout[-5000:], proc.stderr[-5000:])
    return proc


def runs_of(uri: str, experiment: str) -> tuple[MlflowClient, object, list]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    assert len(parents) == 1
    children = list(iter_child_runs(client, exp.experiment_id, parents[0].info.run_id))
    return client, parents[0], children


def check_child(client: MlflowClient, run: object, tmp: Path, epochs: int) -> ExperimentConfig:
    """Params are the full config, metrics have one value per epoch, masks round-trip."""
    params = run.data.params
    cfg = ExperimentConfig.from_flat({k: v for k, v in params.items()})
    assert set(params) == set(cfg.to_flat())
    for name in ("test_acc", "train_loss", "dying_ratio", "k_minus_dying"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == list(range(1, epochs + 1)), (name, steps)
    dying = [m.value for m in client.get_metric_history(run.info.run_id, "dying_ratio")]
    assert all(b <= a for a, b in zip(dying, dying[1:], strict=False)) and dying[0] <= cfg.method.prune_rate
    dest = tmp / run.info.run_id
    dest.mkdir()
    logged_cfg = ExperimentConfig.from_json(
        Path(client.download_artifacts(run.info.run_id, "config.json", str(dest))).read_text())
    assert logged_cfg == cfg
    masks = read_masks(client.download_artifacts(run.info.run_id, "masks/masks.parquet", str(dest)))
    assert masks, "no masks logged"
    for name, mask in masks.items():
        assert int(mask.sum()) == kept_count(mask.numel(), cfg.method.prune_rate), name
    return cfg


def scores_from_checkpoint(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt_dir / "state.pt", weights_only=False)["model"]
    return {k[: -len(".scores")] + ".weight": v for k, v in state.items() if k.endswith(".scores")}


def test_default_sweep_sqlite_two_concurrent_trials(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    proc = sweep("--space", "ep_quick", "--storage", str(storage), "--name", "e2e", "--experiment", "e2e",
                 "--grid", "method.prune_rate=0.2,0.5", "--max-concurrent", "2", *FAST)
    assert proc.returncode == 0
    out = proc.stdout
    assert "Trial status" in out  # Tune's live table
    assert "Results (sorted by test_acc):" in out and "dying_ratio" in out and "Best trial:" in out
    uri = f"sqlite:///{storage.resolve()}/mlflow.db"
    # the UI command that serves MLflow on a free port and prints the saved view's link on it
    assert f"-m orchestrator.tracking.ui --storage {storage.resolve()} --sweep e2e" in out

    client, parent, children = runs_of(uri, "e2e")
    assert parent.info.status == "FINISHED" and parent.data.params["space"] == "ep_quick"
    # MLflow's UI (orchestrator.tracking.labels): runs tab, names, the command as the description
    assert client.get_experiment_by_name("e2e").tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.info.run_name == "ep_quick/e2e (grid; k; 2 trials)"
    exp_id = client.get_experiment_by_name("e2e").experiment_id
    view = f"#/experiments/{exp_id}/runs?viewStateShareKey=sweep-e2e&workflowType=machine_learning"
    assert f"]({view})" in parent.data.tags["mlflow.note.content"]  # relative: any port the UI runs on
    assert "mlflow.sharedViewState.sweep-e2e" in client.get_experiment(exp_id).tags
    assert "python -m orchestrator.sweep --space ep_quick --storage" in parent.data.tags["mlflow.note.content"]
    assert parent.data.params["set.run.max_steps_per_epoch"] == "4"
    assert sorted(c.info.run_name for c in children) == ["ep/k=0.2/seed=0", "ep/k=0.5/seed=0"]
    for c in children:
        assert "masks/density.png" in {a.path for a in client.list_artifacts(c.info.run_id, "masks")}
        assert [d.dataset.name for d in c.inputs.dataset_inputs] == ["digits"]
    # the trial drew it into its last checkpoint (trainables.tune), the driver only uploaded it
    for trial_dir in (storage / "tune" / "e2e").glob("trial_*"):
        first, last = sorted(trial_dir.glob("checkpoint_*"))
        assert "density.png" in verify_checkpoint(last)["files"] and not (first / "density.png").exists()
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"results.csv", "results.parquet"}
    # the sweep ends with its report (orchestrator.report) in place of the old results.png
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/sweep_e2e.png", "report/slt_table1.png", "report/slt_table1.csv"} <= report
    assert "Report: " in out and (storage / "tune" / "e2e" / "report" / "index.html").is_file()
    assert len(children) == 2
    assert all(c.data.tags[PARENT_TAG] == parent.info.run_id and c.info.status == "FINISHED" for c in children)
    rates = sorted(check_child(client, c, tmp_path, epochs=2).method.prune_rate for c in children)
    assert rates == [0.2, 0.5]

    # The logged mask is the top-(1-k) of |score| of the final checkpoint, layer by layer.
    sweep_dir = storage / "tune" / "e2e"
    for trial_dir in sweep_dir.glob("trial_*"):
        last = sorted(trial_dir.glob("checkpoint_*"))[-1]
        cfg = ExperimentConfig.from_json((last / "config.json").read_text())
        logged = read_masks(last / "masks.parquet")
        for name, scores in scores_from_checkpoint(last).items():
            expect = topk_mask(scores, kept_count(scores.numel(), cfg.method.prune_rate))
            assert torch.equal(logged[name], expect), name
    state = json.loads((sweep_dir / "sparsesweep.json").read_text())
    assert state["parent_run_id"] == parent.info.run_id


def test_ddp_trial_against_mlflow_server(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    uri = mlflow_server.wait_healthy()
    proc = sweep("--space", "ep_quick", "--storage", str(tmp_path / "runs"), "--tracking-uri", uri, "--experiment", "ddp",
                 "--workers-per-trial", "2", "--cpus-per-worker", "0.5",
                 "--grid", "method.prune_rate=0.5", *FAST)
    assert proc.returncode == 0
    assert f"open {uri}" in proc.stdout
    client, parent, children = runs_of(uri, "ddp")
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    check_child(client, children[0], tmp_path, epochs=2)
    # Artifacts went through the server, not into the local storage directory.
    assert not (tmp_path / "runs" / "mlartifacts").exists()


def test_optuna_search(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    proc = sweep("--space", "ep_quick", "--storage", str(storage), "--experiment", "opt", "--search", "optuna",
                 "--num-samples", "3", "--max-concurrent", "2", *FAST)
    assert proc.returncode == 0
    client, _, children = runs_of(f"sqlite:///{storage.resolve()}/mlflow.db", "opt")
    assert len(children) == 3
    rates = {float(c.data.params["method.prune_rate"]) for c in children}
    lrs = {float(c.data.params["optim.lr"]) for c in children}
    assert len(rates) == 3 and all(0.2 <= k <= 0.9 for k in rates)
    assert all(0.01 <= lr <= 0.5 for lr in lrs)


def test_interrupted_sweep_resumes_from_checkpoints(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    args = ["--space", "ep_quick", "--storage", str(storage), "--name", "intr", "--experiment", "intr",
            "--grid", "method.prune_rate=0.3,0.6", "--max-concurrent", "1",
            "--set", "schedule.epochs=40", "--set", "data.batch_size=32", "--set", "run.max_steps_per_epoch=6"]
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    sweep_dir = storage / "tune" / "intr"
    deadline = time.monotonic() + 240
    while not list(sweep_dir.glob("trial_*/checkpoint_000002")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out[-3000:], err[-3000:])
    assert "--resume intr" in err

    resumed = sweep("--storage", str(storage), "--resume")
    assert resumed.returncode == 0
    assert "Restored" in resumed.stdout + resumed.stderr
    client, parent, children = runs_of(f"sqlite:///{storage.resolve()}/mlflow.db", "intr")
    assert parent.info.status == "FINISHED"
    assert len(children) == 2  # the resumed trial kept its child run
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
        # resumed from its checkpoint: no epoch trained (and logged) twice
        assert steps == list(range(1, 41)), steps


def test_iterative_sweep_logs_every_cycle(tmp_path: Path) -> None:
    """An iterative sweep: per-epoch and per-cycle metrics, every cycle's mask, the cycle table."""
    storage = tmp_path / "runs"
    proc = sweep("--storage", str(storage), "--name", "cyc", "--experiment", "cyc", "--space", "iep_quick",
                 "--set", "method.cycles=3", "--set", "model.name=mlp", *FAST, "--max-concurrent", "2")
    assert proc.returncode == 0
    assert "Per cycle" in proc.stdout and "cycle/density" in proc.stdout
    uri = f"sqlite:///{storage.resolve()}/mlflow.db"
    client, parent, children = runs_of(uri, "cyc")
    assert len(children) == 3  # ep, hard_lr, soft_lr
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"cycles.csv", "cycles_summary.csv"}
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/slt_fig3b.png", "report/slt_fig5a.png", "report/slt_fig17.png"} <= report  # was cycles.png
    for child in children:
        rid = child.info.run_id
        assert [m.step for m in client.get_metric_history(rid, "test_acc")] == list(range(1, 7))
        assert [m.value for m in client.get_metric_history(rid, "cycle")] == [1, 1, 2, 2, 3, 3]
        acc = client.get_metric_history(rid, "cycle/test_acc")
        assert [m.step for m in acc] == [1, 2, 3]  # step = cycle
        per_epoch = {m.step: m.value for m in client.get_metric_history(rid, "test_acc")}
        assert [m.value for m in acc] == [per_epoch[2], per_epoch[4], per_epoch[6]]
        remaining = [m.value for m in client.get_metric_history(rid, "cycle/density")]
        assert remaining == pytest.approx([0.8, 0.64, 0.512], abs=0.002)
        paths = {a.path for a in client.list_artifacts(rid, "masks")}
        assert paths == {"masks/masks.parquet", "masks/density.png",  # the figure: mlflow_ui
                         *(f"masks/cycle_{c:02d}.parquet" for c in (1, 2, 3))}
        assert {a.path for a in client.list_artifacts(rid)} >= {"config.json", "masks", "ranks", "visits"}
        dest = tmp_path / rid
        last = read_masks(client.download_artifacts(rid, "masks/cycle_03.parquet", str(dest)))
        final = read_masks(client.download_artifacts(rid, "masks/masks.parquet", str(dest)))
        assert all(torch.equal(last[k], final[k]) for k in final)
    table = (storage / "tune" / "cyc" / "cycles.csv").read_text().splitlines()
    assert len(table) == 1 + 3 * 3  # header + one row per trial and cycle

