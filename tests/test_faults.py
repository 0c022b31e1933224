"""Fault paths a real sweep survives while it runs: the CLI with a real local Ray and real
MLflow on loopback. A trial's process or a DDP worker SIGKILLed mid-epoch restarts from its last
checkpoint; a trial that cannot allocate its model fails alone; diverging trials stop at once;
an MLflow server that dies mid-sweep is spooled, replayed, and completed by `--sync-mlflow`.
Results are compared with an uninterrupted run of the same engine, in this process (CPU runs
are bit-identical). Sweeps that die and are resumed with `--resume`: test_faults_resume.py (two
files of about equal length, so that two test workers share the fault tests).
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fault_tools import (
    FAST,
    MLP,
    RestartableMlflowServer,
    around_restart,
    child_runs,
    cli_env,
    end_group,
    experiment_state,
    history,
    in_session,
    newest_intact,
    reference,
    results_of,
    run_sweep,
    start_sweep,
    trial_dirs,
    trial_id_of,
    wait_for,
)
from mlflow import MlflowClient

from orchestrator.sweep import main
from orchestrator.tracking.tags import KIND_TAG, STATUS_TAG
from trainables.config import resolve_tune_config
from trainables.loop import run_experiment

pytestmark = pytest.mark.integration


def killed_and_restarted(tmp_path: Path, name: str, extra: list[str], pick_pid: Any,
                         epochs: int, env: dict[str, str] | None = None, progress: Any = None
                         ) -> tuple[int, str, Path, list[dict[str, Any]]]:
    """Run a sweep, SIGKILL one process of its training trial mid-epoch (`pick_pid(rows)`),
    let `--max-failures 1` restart it; (exit code, output, trial dir, rows before the kill)."""
    storage = tmp_path / "runs"
    sweep_dir = storage / "tune" / name
    log = tmp_path / f"{name}.log"
    proc = start_sweep("--space", "ep_quick", "--storage", str(storage), "--name", name, "--experiment", name,
                       "--max-failures", "1", "--set", "model.name=mlp", "--set", "method.prune_rate=0.5",
                       "--set", f"schedule.epochs={epochs}", *FAST, *extra, env=env, log=log)
    try:
        def training() -> tuple[Path, list[dict[str, Any]], int] | None:
            for trial_dir in sweep_dir.glob("trial_*"):
                rows = results_of(trial_dir)
                epoch = progress(sweep_dir) if progress else (rows[-1].get("epoch", 0) if rows else 0)
                if epoch >= 3 and (pid := pick_pid(rows, proc.pid)):
                    return trial_dir, rows, pid
            return None

        trial_dir, before, pid = wait_for("a trial past epoch 3", training, 240, proc, log)
        os.kill(pid, signal.SIGKILL)  # a process this sweep started (checked by pick_pid)
        code = proc.wait(timeout=300)
    finally:
        end_group(proc)
    return code, log.read_text(), trial_dir, before


def check_restarted_trial(storage: Path, name: str, trial_dir: Path,
                          before: list[dict[str, Any]], epochs: int, *, exact: bool = True) -> None:
    """At most one epoch lost; one continuous MLflow history, equal to an uninterrupted run."""
    last_reported, trained = around_restart(trial_dir)
    # restarted from its newest checkpoint: no epoch that any report showed done is trained
    # again, only the one cut short (DDP: Tune may lag behind Train, whose checkpoints then
    # are newer; their reports are replayed, and MLflow's history below has no gap)
    assert last_reported >= len(before)
    assert trained[0] >= last_reported, (last_reported, trained)
    assert trained == list(range(trained[0], epochs + 1))
    uri = f"sqlite:///{storage.resolve()}/mlflow.db"
    client, _, runs = child_runs(uri, name)
    trial_id = trial_id_of(trial_dir)
    run = runs[trial_id]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sparsesweep.num_failures"] == "1"
    if exact:  # one worker: equal to an uninterrupted run of the engine
        ref = reference(experiment_state(trial_dir.parent)[trial_id]["config"])
        want = {r["epoch"]: r for r in ref}
    else:  # DDP (2 gloo workers): equal to the first report Tune recorded of each epoch
        want = {}
        for r in results_of(trial_dir):
            want.setdefault(int(r["epoch"]), r)
    assert sorted(want) == list(range(1, epochs + 1))
    for key in ("train_loss", "test_acc"):
        assert history(client, run, key) == [(e, want[e][key]) for e in sorted(want)], key


@pytest.mark.timeout(360)
def test_trial_process_killed_restarts_and_oom_trial_fails_alone(tmp_path: Path) -> None:
    """A one-worker trial's process SIGKILLed mid-epoch restarts from its last checkpoint
    (--max-failures 1); beside it a trial whose model cannot be allocated fails with its
    error and config on record, and stops nothing else."""
    def trial_pid(rows: list[dict[str, Any]], sweep_pid: int) -> int | None:
        pid = int(rows[-1]["pid"])
        return pid if in_session(pid, sweep_pid) else None

    epochs = 60  # of ~0.1 s: the kill lands while it trains
    # Conv-4 at width 1024: a 3x3 conv of 65536 -> 65536 channels is a 155 GB weight, which no
    # allocator grants here (a real failed allocation); every key stays within its allowed range
    code, out, trial_dir, before = killed_and_restarted(
        tmp_path, "tkill", ["--set", "model.name=conv4", "--grid", "model.width=1,1024", "--max-concurrent", "2"],
        trial_pid, epochs)
    assert code == 1, out[-4000:]  # one trial errored
    storage = tmp_path / "runs"
    check_restarted_trial(storage, "tkill", trial_dir, before, epochs)

    table = pd.read_csv(storage / "tune" / "tkill" / "results.csv")
    oom = table[table["model.width"] == 1024].iloc[0]
    ok = table[~table.index.isin([oom.name])].iloc[0]
    assert oom["status"] == "ERROR" and "out of memory" in oom["error"], oom.to_dict()
    assert "lower data.batch_size" in oom["error"]
    assert ok["status"] == "OK" and ok["epoch"] == epochs
    client, _, runs = child_runs(f"sqlite:///{storage.resolve()}/mlflow.db", "tkill")
    failed = runs[oom["trial"]]
    assert failed.info.status == "FAILED" and failed.data.tags[STATUS_TAG] == "error"
    assert "out of memory" in failed.data.tags["sparsesweep.error"]
    assert failed.data.params["model.width"] == "1024.0"  # its config
    text = Path(client.download_artifacts(failed.info.run_id, "error.txt", str(tmp_path))).read_text()
    assert "can't allocate memory" in text


def ddp_worker_pid(rows: list[dict[str, Any]], sweep_pid: int) -> int | None:
    """A Ray Train worker (DDP rank) of this sweep, found by its process title."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "RayTrainWorker" in title and in_session(int(entry.name), sweep_pid):
                return int(entry.name)
    return None


@pytest.mark.timeout(420)
def test_ddp_worker_killed_restarts_from_checkpoint(tmp_path: Path) -> None:
    """One DDP worker of a 2-worker trial SIGKILLed mid-epoch: the trial restarts from its last
    checkpoint with --max-failures 1, and its MLflow history stays one continuous line."""
    epochs = 40  # reports every ~0.3 s: the kill lands while it trains
    # Ray Train picks up reports on its health-check poll (2 s by default, a test-only 0.1 s)
    def train_epoch(sweep_dir: Path) -> int:  # Train's newest checkpoint: Tune hears late
        epochs_done = [newest_intact(d)[0] for d in (sweep_dir / "ddp").glob("*")
                       if d.is_dir() and any(d.glob("checkpoint_*/manifest.json"))]
        return max(epochs_done, default=0)

    code, out, trial_dir, before = killed_and_restarted(
        tmp_path, "dkill", ["--set", "model.mlp_hidden=32", "--workers-per-trial", "2",
                            "--cpus-per-worker", "0.5"],
        ddp_worker_pid, epochs, env=cli_env(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1"),
        progress=train_epoch)
    assert code == 0, out[-4000:]
    check_restarted_trial(tmp_path / "runs", "dkill", trial_dir, before, epochs, exact=False)


SECRETS = {  # fake credentials a user's shell would hold; none may reach any output
    "RAY_AUTH_TOKEN": "rayTOKEN-5f3c2a91e7d4",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEY4TESTS77",
    "AWS_SECRET_ACCESS_KEY": "awsSECRET-9b8a7c6d5e4f",
    "MLFLOW_TRACKING_USERNAME": "mlflowUSER-31415",
    "MLFLOW_TRACKING_PASSWORD": "mlflowPASS-27182",
    "MLFLOW_TRACKING_TOKEN": "mlflowTOKEN-16180",
}


@pytest.mark.timeout(300)
def test_diverging_trials_stop_at_once_are_pruned_and_no_secret_leaks(tmp_path: Path) -> None:
    """A large LR on a dense net without BatchNorm (soft-iep-appendix A.2's failure mode):
    each trial stops at the step its loss turns NaN/inf, shows as diverged in Tune's table,
    the results table and MLflow, and Optuna records it as pruned; the sweep goes on to the
    next trial. The sweep ran with fake credentials in its environment: no output holds one."""
    import shutil
    import tempfile

    import optuna

    storage = tmp_path / "runs"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths
    try:
        code, out = run_sweep(
            "--storage", str(storage), "--name", "div", "--experiment", "div", "--space", "dense_quick",
            "--search", "optuna", "--num-samples", "2", "--max-concurrent", "1", "--set", "model.name=mlp",
            "--set", "optim.lr=50", "--set", "schedule.epochs=3", *FAST,
            env=cli_env(**SECRETS, RAY_TMPDIR=str(ray_tmp)), log=tmp_path / "div.log")
        assert code == 0, out[-4000:]
        leaks = [(name, path) for path in [tmp_path / "div.log", *storage.rglob("*"), *ray_tmp.rglob("*")]
                 if path.is_file() and not path.is_symlink()
                 for name, secret in SECRETS.items() if secret.encode() in path.read_bytes()]
        assert not leaks, leaks
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    sweep_dir = storage / "tune" / "div"
    # Tune's live table (its last print): a `diverged` column, 1 for both trials
    lines = out.splitlines()
    at = max(i for i, line in enumerate(lines) if "Trial name" in line and "status" in line)
    cells = [[c for c in re.split(r"\s{2,}", line.strip("│ ")) if c] for line in lines[at:at + 4]]
    column = cells[0].index("diverged")
    assert [row[column] for row in cells[2:4]] == ["1", "1"], lines[at:at + 4]
    table = pd.read_csv(sweep_dir / "results.csv")
    assert list(table["status"]) == ["DIVERGED", "DIVERGED"], table
    assert "2 trial(s) diverged" in out

    state = experiment_state(sweep_dir)
    client, _, runs = child_runs(f"sqlite:///{storage.resolve()}/mlflow.db", "div")
    for trial_id, trial_dir in trial_dirs(sweep_dir).items():
        rows = results_of(trial_dir)
        # the engine stops at the first step whose loss is not finite
        ref = run_experiment(resolve_tune_config(state[trial_id]["config"], {}))
        assert ref["diverged"] == 1.0 and rows[-1]["diverged"] == 1.0
        assert rows[-1]["step"] == ref["step"] and rows[-1]["epoch"] == ref["epoch"] <= 3
        assert "test_acc" not in rows[-1]  # no score to rank: Optuna is not given a number
        run = runs[trial_id]
        assert run.info.status == "FAILED" and run.data.tags[STATUS_TAG] == "diverged"
        assert run.data.tags["sparsesweep.diverged_at"] == f"epoch {ref['epoch']}, step {ref['step']}"
    study = optuna.load_study(study_name="div", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    # told "failed (pruned)": no objective value, whatever the epochs before the NaN reported
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2


@pytest.mark.timeout(420)
def test_mlflow_outage_is_buffered_replayed_and_synced(
        tmp_path: Path, migrated_db: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The tracking server dies mid-sweep: training goes on, the driver spools what it cannot
    log, and replays it in order when the server is back. It dies again before the end: the
    sweep finishes, says how to replay, and `--resume NAME --sync-mlflow` completes MLflow
    (twice: idempotent)."""
    (tmp_path / "server").mkdir()
    server = RestartableMlflowServer(tmp_path / "server", migrated_db)
    storage = tmp_path / "runs"
    sweep_dir = storage / "tune" / "out"
    log = tmp_path / "out.log"
    epochs = 60
    uri = server.start()
    proc = None
    try:
        proc = start_sweep("--space", "ep_quick", "--storage", str(storage), "--name", "out", "--experiment", "out",
                           "--tracking-uri", uri, *MLP, "--set", "method.prune_rate=0.5",
                           "--set", f"schedule.epochs={epochs}", *FAST, log=log)
        client = MlflowClient(tracking_uri=uri)

        def logged_steps() -> list[int]:
            exp = client.get_experiment_by_name("out")
            runs = client.search_runs([exp.experiment_id], f"tags.`{KIND_TAG}` = 'trial'") if exp else []
            return [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] if runs else []

        def trial_rows() -> list[dict[str, Any]]:
            dirs = list(sweep_dir.glob("trial_*"))
            return results_of(dirs[0]) if dirs else []

        wait_for("epoch 3 in MLflow", lambda: len(logged_steps()) >= 3, 240, proc, log)
        # The test freezes the trial (SIGSTOP) whenever it must not run ahead: a server takes
        # seconds to stop and start, a tiny epoch milliseconds.
        pid = int(trial_rows()[-1]["pid"])
        assert in_session(pid, proc.pid)
        os.kill(pid, signal.SIGSTOP)
        server.stop()  # outage 1
        down_at = trial_rows()[-1]["epoch"]
        os.kill(pid, signal.SIGCONT)
        wait_for("training goes on while MLflow is down",
                 lambda: trial_rows()[-1]["epoch"] >= down_at + 4, 120, proc, log)
        os.kill(pid, signal.SIGSTOP)

        def spooled_steps() -> list[int]:
            path = sweep_dir / "mlflow-spool.jsonl"
            lines = path.read_text().splitlines() if path.is_file() else []
            return [op["metrics"][0][2] for op in map(json.loads, lines) if op["op"] == "metrics"]

        # The driver still handles what the trial sent before it froze: poll until the spool
        # holds the last epoch Tune recorded and neither has grown over three polls (0.6 s).
        polls: list[tuple[list[int], int]] = []

        def spool_settled() -> bool:
            polls.append((spooled_steps()[-1:], int(trial_rows()[-1]["epoch"])))
            last = polls[-3:]
            return len(last) == 3 and last[0] == last[1] == last[2] and last[2][0] == [last[2][1]]

        wait_for("the spool to stop growing", spool_settled, 60, proc, log, poll_s=0.2)
        steps = spooled_steps()  # durably on the driver's disk, in order
        trained = steps[-1]
        assert steps == list(range(steps[0], trained + 1))
        assert down_at + 4 <= trained < epochs
        server.start()
        # replayed in order, without duplicates, by the running sweep (the trial is frozen)
        wait_for("the spool replayed", lambda: logged_steps()[-1:] == [trained], 60, proc, log)
        assert logged_steps() == list(range(1, trained + 1))
        server.stop()  # outage 2, until after the sweep
        os.kill(pid, signal.SIGCONT)
        code = proc.wait(timeout=300)
        out = log.read_text()
    finally:
        if proc is not None:
            end_group(proc)
        server.stop()
    assert code == 0, out[-4000:]
    assert f"--storage {storage.resolve()} --resume out --sync-mlflow" in out
    assert (sweep_dir / "mlflow-spool.jsonl").stat().st_size > 0

    server.start()
    try:
        for _ in (1, 2):  # the second sync changes nothing; no Ray: run in this process
            with monkeypatch.context() as env:  # the CLI sets MLflow's retry env in its process
                for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
                    env.setenv(name, os.environ.get(name, ""))
                    env.delenv(name)
                assert main(["--storage", str(storage), "--resume", "out", "--sync-mlflow"]) == 0
            assert "MLflow synced" in capsys.readouterr().out
            client, parent, runs = child_runs(uri, "out")
            (run,) = runs.values()
            first = {}
            for r in results_of(next(sweep_dir.glob("trial_*"))):
                first.setdefault(int(r["epoch"]), r)
            assert sorted(first) == list(range(1, epochs + 1))
            for key in ("train_loss", "test_acc", "dying_ratio"):
                assert history(client, run, key) == [(e, first[e][key]) for e in sorted(first)], key
            assert run.info.status == "FINISHED" and run.data.tags[STATUS_TAG] == "finished"
            assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.json", "masks"}
            assert parent.info.status == "FINISHED"
            # the report the sweep could not make while MLflow was down, made and logged now
            assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
                "results.csv", "results.parquet", "report"}
            assert "report/index.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
        assert (sweep_dir / "mlflow-spool.jsonl").stat().st_size == 0
    finally:
        server.stop()
