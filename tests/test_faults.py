"""Fault paths of a real sweep: the CLI with a real local Ray and real MLflow on loopback.

Each test breaks something the way it breaks in production (a SIGKILL of the driver or of a
trial's process, a checkpoint cut short, a full disk, ...) and checks what the issue asks:
finished work is kept, running trials continue from their last (intact) checkpoint, every
epoch appears exactly once in MLflow, and results are bit-identical to an uninterrupted run
(CPU). References for "uninterrupted" are computed in-process by the same engine, which is
what a trial runs (the sweep adds no arithmetic).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fault_tools import (
    FAST,
    RestartableMlflowServer,
    cli_env,
    end_group,
    experiment_state,
    group_gone,
    in_session,
    results_of,
    run_sweep,
    start_sweep,
    trial_dirs,
    trial_id_of,
    wait_for,
)
from mlflow import MlflowClient

from orchestrator.sweep import main
from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG, STATUS_TAG
from trainables.checkpoint_io import CorruptCheckpoint, verify_checkpoint
from trainables.config import resolve_tune_config
from trainables.loop import run_experiment

pytestmark = pytest.mark.integration
MLP = ["--set", "model.name=mlp", "--set", "model.mlp_hidden=32"]  # epochs of milliseconds


def reference(config: dict[str, Any]) -> list[dict[str, float]]:
    """Per-epoch reports of an uninterrupted run of a trial's config, in this process."""
    reports: list[dict[str, float]] = []
    run_experiment(resolve_tune_config(config, {}), reporter=lambda m, _: reports.append(dict(m)))
    return reports


def child_runs(uri: str, experiment: str) -> tuple[MlflowClient, Any, dict[str, Any]]:
    """(client, parent run, trial id -> child run) of the one sweep in `experiment`."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    (parent,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    children = list(iter_child_runs(client, exp.experiment_id, parent.info.run_id))
    by_trial = {c.data.tags["sparsesweep.trial_id"]: c for c in children}
    assert len(by_trial) == len(children), "one MLflow run per trial"
    return client, parent, by_trial


def newest_intact(trial_dir: Path) -> tuple[int, Path]:
    """(epoch, directory) of a trial's newest checkpoint whose manifest verifies."""
    found = []
    for ckpt in trial_dir.glob("checkpoint_*"):
        try:
            found.append((verify_checkpoint(ckpt)["epoch"], ckpt))
        except CorruptCheckpoint:
            continue
    return max(found, default=(0, trial_dir))


def around_restart(trial_dir: Path) -> tuple[int, list[int]]:
    """(last epoch reported before the trial's one restart, epochs it trained after it).

    A restarted trial first replays reports from its checkpoint (`replayed`): that is where
    the restart is in Tune's records, and those are not training."""
    rows = results_of(trial_dir)
    starts = [i for i, r in enumerate(rows) if r.get("replayed") and not (i and rows[i - 1].get("replayed"))]
    assert len(starts) == 1, [(r["epoch"], r.get("replayed")) for r in rows]
    before = int(rows[starts[0] - 1]["epoch"]) if starts[0] else 0
    trained = [int(r["epoch"]) for r in rows[starts[0]:] if not r.get("replayed")]
    return before, trained


def history(client: MlflowClient, run: Any, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


@pytest.mark.timeout(420)
def test_driver_sigkill_then_resume_keeps_everything_once(tmp_path: Path) -> None:
    """SIGKILL of the driver mid-sweep, one trial finished, two running (one of them with its
    latest checkpoint cut short afterwards); `--resume` finishes the sweep bit-identically."""
    storage = tmp_path / "runs"
    sweep_dir = storage / "tune" / "kill"
    args = ["--space", "ep_quick", "--storage", str(storage), "--name", "kill", "--experiment", "kill",
            "--grid", "schedule.epochs=3,40,41", "--set", "method.prune_rate=0.5", *MLP,
            "--max-concurrent", "3", "--num-cpus", "3", *FAST]
    log = tmp_path / "first.log"
    proc = start_sweep(*args, log=log)
    try:
        def rows_by_length() -> dict[int, list[dict[str, Any]]]:
            out = {}
            for trial_dir in sweep_dir.glob("trial_*"):
                rows = results_of(trial_dir)
                if rows:
                    out[int(rows[0]["config"]["schedule.epochs"])] = rows
            return out

        def long_ones_running() -> list[int] | None:
            rows = rows_by_length()
            if all(len(rows.get(n, [])) >= 3 for n in (40, 41)):
                return [int(rows[n][-1]["pid"]) for n in (40, 41)]
            return None

        # The two long trials are frozen (SIGSTOP) past epoch 3, whatever the machine's speed,
        # until the short one has finished and Tune has saved a state that says so.
        frozen = wait_for("two trials past epoch 3", long_ones_running, 240, proc, log, poll_s=0.05)
        for pid in frozen:
            assert in_session(pid, proc.pid)
            os.kill(pid, signal.SIGSTOP)

        def ready() -> dict[str, Any] | None:
            state = experiment_state(sweep_dir)
            by_len = {t["config"].get("schedule.epochs"): (tid, t) for tid, t in state.items()}
            if len(by_len) < 3 or by_len[3][1]["status"] != "TERMINATED":
                return None
            running = [by_len[n] for n in (40, 41)]
            if all(t["status"] == "RUNNING" and t["last_result"].get("epoch", 0) >= 3 for _, t in running):
                return {"done": by_len[3][0], "b": running[0][0], "c": running[1][0], "state": state}
            return None

        seen = wait_for("one trial finished, two past epoch 3", ready, timeout=240, proc=proc, log=log)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its Ray processes are orphaned
        proc.wait(timeout=30)
        state = experiment_state(sweep_dir)  # what Tune recorded before it died
    finally:
        end_group(proc)
    assert group_gone(proc.pid), "leftover processes of the killed sweep"
    dirs = trial_dirs(sweep_dir)
    done, b, c = seen["done"], seen["b"], seen["c"]
    assert state[done]["status"] == "TERMINATED" and state[b]["status"] == "RUNNING"
    # Tune's saved state may lag behind the trials (its recorded checkpoint can even be deleted
    # already): a trial continues from its newest intact checkpoint on disk.
    b_epoch, _ = newest_intact(dirs[b])
    c_epoch, c_newest = newest_intact(dirs[c])
    with open(c_newest / "state.pt", "r+b") as f:  # then C's newest is cut short
        f.truncate(os.path.getsize(c_newest / "state.pt") // 2)
    c_prev, _ = newest_intact(dirs[c])
    assert c_prev < c_epoch
    done_rows = len(results_of(dirs[done]))

    code, out = run_sweep("--storage", str(storage), "--resume", "kill", log=tmp_path / "resume.log")
    assert code == 0, out[-4000:]
    assert "Traceback" not in out and "ERROR" not in out, out[-6000:]  # a resume raises no false alarm
    # the damaged checkpoint is named and skipped (whether or not Tune had recorded it)
    assert f"{c_newest.name}: state.pt has" in out and "truncated or overwritten); skipping it" in out

    # The finished trial was not run again; B continued from its last checkpoint (re-reporting
    # it when Tune had not recorded it); C from the newest one before its damaged one.
    assert len(results_of(dirs[done])) == done_rows
    assert around_restart(dirs[b])[1] == list(range(b_epoch + 1, 41))
    assert around_restart(dirs[c])[1] == list(range(c_prev + 1, 42))

    # The trial table equals an uninterrupted sweep's, bit for bit (CPU).
    table = pd.read_csv(sweep_dir / "results.csv").set_index("trial")
    assert set(table["status"]) == {"OK"}
    _, parent, runs = child_runs(f"sqlite:///{storage.resolve()}/mlflow.db", "kill")
    client = MlflowClient(tracking_uri=f"sqlite:///{storage.resolve()}/mlflow.db")
    assert parent.info.status == "FINISHED" and set(runs) == {done, b, c}
    for tid in (done, b, c):
        ref = reference(state[tid]["config"])
        last = ref[-1]
        row = table.loc[tid]
        for key in ("test_acc", "dying_ratio", "k_minus_dying"):
            assert row[key] == last[key], (tid, key)  # exact: CPU runs are deterministic
        run = runs[tid]
        assert run.info.status == "FINISHED" and run.data.tags[STATUS_TAG] == "finished"
        # every epoch exactly once, with the uninterrupted run's value
        for key in ("train_loss", "test_acc", "dying_ratio"):
            assert history(client, run, key) == [(r["epoch"], r[key]) for r in ref], (tid, key)


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

    epochs = 60  # of ~50 ms: the kill lands while it trains
    # 2e12 hidden units: a weight of 512 TB, which no allocator grants (a real failed allocation)
    code, out, trial_dir, before = killed_and_restarted(
        tmp_path, "tkill", ["--grid", "model.mlp_hidden=32,2000000000000", "--max-concurrent", "2"],
        trial_pid, epochs)
    assert code == 1, out[-4000:]  # one trial errored
    storage = tmp_path / "runs"
    check_restarted_trial(storage, "tkill", trial_dir, before, epochs)

    table = pd.read_csv(storage / "tune" / "tkill" / "results.csv")
    oom = table[table["model.mlp_hidden"].astype(str).str.contains("2000000000000")].iloc[0]
    ok = table[~table.index.isin([oom.name])].iloc[0]
    assert oom["status"] == "ERROR" and "out of memory" in oom["error"], oom.to_dict()
    assert "lower data.batch_size" in oom["error"]
    assert ok["status"] == "OK" and ok["epoch"] == epochs
    client, _, runs = child_runs(f"sqlite:///{storage.resolve()}/mlflow.db", "tkill")
    failed = runs[oom["trial"]]
    assert failed.info.status == "FAILED" and failed.data.tags[STATUS_TAG] == "error"
    assert "out of memory" in failed.data.tags["sparsesweep.error"]
    assert failed.data.params["model.mlp_hidden"] == "(2000000000000,)"  # its config
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
        time.sleep(1.0)  # the driver handles what the trial sent before it froze

        def spooled_steps() -> list[int]:
            lines = (sweep_dir / "mlflow-spool.jsonl").read_text().splitlines()
            return [op["metrics"][0][2] for op in map(json.loads, lines) if op["op"] == "metrics"]

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


def fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem is full (ENOSPC); return it."""
    ballast = directory / "ballast"
    with open(ballast, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC
    return ballast


@pytest.mark.timeout(360)
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs as the full disk (needs root, "
                                               "as CI runs)")
def test_full_disk_mid_sweep_says_so_and_resumes(tmp_path: Path) -> None:
    """The sweep's storage fills up mid-sweep: the sweep ends with one clear line (exit 75) and
    a state that `--resume` finishes once space is freed, with a complete MLflow history."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    try:
        storage = disk / "runs"
        sweep_dir = storage / "tune" / "full"
        log = tmp_path / "full.log"
        epochs = 60
        proc = start_sweep("--space", "ep_quick", "--storage", str(storage), "--name", "full", "--experiment", "full", *MLP,
                           "--set", "method.prune_rate=0.5", "--set", f"schedule.epochs={epochs}",
                           *FAST, log=log)
        try:
            def trial_rows() -> list[dict[str, Any]]:
                dirs = list(sweep_dir.glob("trial_*"))
                return results_of(dirs[0]) if dirs else []

            wait_for("epoch 3", lambda: (r := trial_rows()) and r[-1]["epoch"] >= 3, 240, proc, log)
            ballast = fill(disk)
            code = proc.wait(timeout=240)
        finally:
            end_group(proc)
        out = log.read_text()
        assert code == 75, out[-4000:]
        last = out.strip().splitlines()[-1]  # the sweep's last word: one line, not a traceback
        assert last.startswith("error: the sweep's storage cannot be written (No space left on device"), last
        assert last.endswith(f"--storage {storage.resolve()} --resume full")

        ballast.unlink()  # space is back
        code, out = run_sweep("--storage", str(storage), "--resume", "full", log=tmp_path / "resume.log")
        assert code == 0, out[-4000:]
        table = pd.read_csv(sweep_dir / "results.csv")
        assert list(table["status"]) == ["OK"] and table["epoch"][0] == epochs
        client, parent, runs = child_runs(f"sqlite:///{storage.resolve()}/mlflow.db", "full")
        (run,) = runs.values()
        assert [s for s, _ in history(client, run, "train_loss")] == list(range(1, epochs + 1))
        assert run.info.status == "FINISHED" and parent.info.status == "FINISHED"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
