"""Helpers of the fault tests (test_faults.py, test_faults_resume.py): run the sweep CLI as a
user would, watch Tune's files, end what the test started (by process group, never by name),
restart a real `mlflow server`, read what a sweep recorded in MLflow and Tune, and compute the
uninterrupted run it must equal.

Every CLI run starts in its own session, so that after a SIGKILL of the driver the test can
end the Ray processes that driver left behind (raylet, workers) by their process group: only
processes this test started, whatever else runs on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from conftest import end_process_group
from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG
from trainables.checkpoint_io import CorruptCheckpoint, verify_checkpoint
from trainables.config import resolve_tune_config
from trainables.loop import run_experiment

ROOT = Path(__file__).resolve().parents[1]
# Small trials on digits: the mechanics (Tune, checkpoints, MLflow) are those of a real sweep.
FAST = ["--set", "run.max_steps_per_epoch=4", "--set", "data.batch_size=32"]
MLP = ["--set", "model.name=mlp", "--set", "model.mlp_hidden=32"]  # epochs of milliseconds


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SPARSESWEEP_MLFLOW_FINAL_WAIT_S": "3",
           "SPARSESWEEP_MLFLOW_MAX_BACKOFF_S": "2"}
    env.update(extra)
    return env


def start_sweep(*args: str, env: dict[str, str] | None = None, log: Path) -> subprocess.Popen:
    """The sweep CLI in its own session, stdout+stderr to `log`."""
    out = open(log, "w")  # noqa: SIM115 - closed by the process's end (finish())
    return subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT,
                            env=env or cli_env(), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def run_sweep(*args: str, env: dict[str, str] | None = None, log: Path,
              timeout: float = 300) -> tuple[int, str]:
    """Run the CLI to its end; (exit code, output). Ends its leftovers on the way out."""
    proc = start_sweep(*args, env=env, log=log)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        end_group(proc)
    return code, log.read_text()


def end_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """End the process, then every process left in its session, each by its pid.

    The CLI ran with start_new_session, so its session id is its pid; Ray's workers get
    process groups of their own but stay in that session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    for pid in [proc.pid, *session_pids(proc.pid)]:  # Ray's processes the driver left behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def wait_for(what: str, check: Callable[[], Any], timeout: float, proc: subprocess.Popen | None = None,
             log: Path | None = None, poll_s: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail with the log's tail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"sweep ended (rc {proc.returncode}) before: {what}\n"
                                 + (log.read_text()[-4000:] if log else ""))
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}\n"
                                 + (log.read_text()[-4000:] if log else ""))
        time.sleep(poll_s)


def results_of(trial_dir: Path) -> list[dict[str, Any]]:
    """Every report Tune recorded for a trial (result.json), in order."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # being written
            break
    return rows


def trial_id_of(trial_dir: Path) -> str:
    """The Tune trial id of a trial directory (from its reports; grid ids hold a '_')."""
    rows = results_of(trial_dir)
    return str(rows[0]["trial_id"]) if rows else "_".join(trial_dir.name.split("_")[1:3])


def trial_dirs(sweep_dir: Path) -> dict[str, Path]:
    """trial id -> trial directory."""
    return {trial_id_of(p): p for p in sweep_dir.glob("trial_*") if p.is_dir()}


def experiment_state(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """trial id -> {status, last_result} from Tune's newest experiment state (JSON parts only)."""
    states = sorted(sweep_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except ValueError:  # being replaced
        return {}
    out = {}
    for trial_json, meta_json in data.get("trial_data", []):
        t, meta = json.loads(trial_json), json.loads(meta_json)
        out[t["trial_id"]] = {"status": t["status"], "last_result": meta.get("last_result") or {},
                              "config": t.get("config") or {}}
    return out


def resumed_from(rows: list[dict[str, Any]]) -> list[int]:
    """The first epoch of every restart of a trial (rows whose iterations_since_restore is 1)."""
    return [int(r["epoch"]) for i, r in enumerate(rows) if i and r.get("iterations_since_restore") == 1]


def session_pids(sid: int) -> list[int]:
    """Live processes of a session (zombies excluded): what a test must not leave behind."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                stat = (entry / "stat").read_text()
                if os.getsid(int(entry.name)) == sid and stat.rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return pids


def in_session(pid: int, sid: int) -> bool:
    """`pid` was started by the sweep whose session is `sid` (so the test may end it)."""
    try:
        return os.getsid(pid) == sid
    except ProcessLookupError:
        return False


def group_gone(sid: int, timeout: float = 20.0) -> bool:
    """Wait until a session is empty (SIGKILLed processes take a moment to go)."""
    deadline = time.monotonic() + timeout
    while session_pids(sid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


class RestartableMlflowServer:
    """A real `mlflow server` on a fixed loopback port and store, stopped and started at will
    (an outage). Its own session: stop() ends the server and its workers by process group."""

    def __init__(self, root: Path, migrated_db: Path) -> None:
        import shutil
        import socket

        self.root = root
        shutil.copyfile(migrated_db, root / "server.db")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout_s: float = 120.0) -> str:
        import urllib.request

        self.starts += 1
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
               f"sqlite:///{self.root}/server.db", "--artifacts-destination", str(self.root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        log = open(self.root / f"server-{self.starts}.log", "wb")  # noqa: SIM115 - the server's
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as reply:
                    if reply.status == 200:
                        return self.uri
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(self.root / f'server-{self.starts}.log').read_text()[-2000:]}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is not None:
            end_process_group(self.proc, timeout=15)


# ----- what a sweep recorded -----------------------------------------------------------------

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
