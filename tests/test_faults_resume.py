"""Fault paths that end a real sweep, then `--resume`: the driver SIGKILLed mid-sweep (with a
checkpoint cut short), a full disk. Every epoch appears exactly once in MLflow, and results are
bit-identical to an uninterrupted run of the same engine, in this process (CPU).
Faults a sweep survives while it runs (MLflow outages included): test_faults.py.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fault_tools import (
    FAST,
    MLP,
    around_restart,
    child_runs,
    end_group,
    experiment_state,
    group_gone,
    history,
    in_session,
    newest_intact,
    reference,
    results_of,
    run_sweep,
    start_sweep,
    trial_dirs,
    wait_for,
)
from mlflow import MlflowClient

from orchestrator.tracking.tags import STATUS_TAG

pytestmark = pytest.mark.integration


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
