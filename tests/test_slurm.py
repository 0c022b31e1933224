"""The SLURM batch script, run for real: `munged`, `slurmctld` and `slurmd` of a one-node cluster
on 127.0.0.1 (own key, socket, config, state and spool under a temp dir), two jobs written and
submitted by `python -m orchestrator.cluster.slurm write --submit`, side by side on the node
(each its own Ray head on its job's ports):

- one runs a 2-epoch sweep to the end: the results table and MLflow's runs;
- the other gets USR1 (`scancel --signal=USR1 --batch`, what `--signal=B:USR1@120` sends before
  the time limit) once a trial has finished: the driver stops, the job requeues itself, and the
  requeued run resumes the sweep to the full table, the finished trial kept as it was, no MLflow
  run and no metric step logged twice.

Skipped without SLURM's binaries or root (slurmd runs as root here), unless
SPARSESWEEP_REQUIRE_SLURM=1 (CI), where that is a failure.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import free_port
from orchestrator.cluster.slurm import job_ports
from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG

ROOT = Path(__file__).resolve().parents[1]
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel")
FAST = ["--space", "ep_quick", "--set", "run.max_steps_per_epoch=4", "--set", "data.batch_size=32",
        "--max-concurrent", "1"]
LONG_EPOCHS = 6  # the requeued sweep: long enough to be interrupted between its trials


def _missing() -> str:
    gone = [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).is_file())]
    if gone:
        return f"SLURM binaries missing: {', '.join(gone)} (Debian: slurm-wlm munge)"
    return "" if os.geteuid() == 0 else "slurmd needs root here"


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SlurmCluster:
    """munged + slurmctld + slurmd in the foreground, as children of the test; env for clients."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        for sub in ("state", "spool", "log", "run"):
            (root / sub).mkdir(parents=True)
        munge = root / "munge"
        munge.mkdir(mode=0o755)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        self.socket = munge / "munge.socket"
        host = socket.gethostname().split(".")[0]
        conf = root / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=sparsesweep-test", f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.socket}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/run/slurmctld.pid", f"SlurmdPidFile={root}/run/slurmd.pid",
            f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none", "ReturnToService=2", "JobRequeue=1",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
        venv_bin = str(Path(sys.executable).parent)
        self.env = {**os.environ, "SLURM_CONF": str(conf), "PYTHONPATH": str(ROOT),
                    "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
                    # the batch shell's Ray head listens on loopback, like the rest of this cluster
                    "RAY_HEAD_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
        self._start([_exe("munged"), "-F", "-f", f"--key-file={key}", f"--socket={self.socket}",
                     f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                     f"--seed-file={munge}/munged.seed"], "munged")
        self._wait(lambda: self.socket.exists(), "munged's socket")
        self._start([_exe("slurmctld"), "-D", "-i"], "slurmctld")
        self._start([_exe("slurmd"), "-D"], "slurmd")
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle",
                   "the node idle in sinfo")

    def _start(self, cmd: list[str], name: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 - kept open by the daemon
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, ok, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not ok():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            assert not dead, f"{dead} exited: {self.logs()}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s: {self.logs()}"
            time.sleep(0.5)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ...)."""
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.root / "log").iterdir()))

    def stop(self) -> None:
        for proc in reversed(self.procs):  # slurmd, slurmctld, then munged
            _stop(proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    if reason := _missing():
        if os.environ.get("SPARSESWEEP_REQUIRE_SLURM") == "1":
            pytest.fail(f"SPARSESWEEP_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield c
    finally:
        c.stop()


def _submit(cluster: SlurmCluster, storage: Path, name: str, epochs: int) -> str:
    out = cluster.run(sys.executable, "-m", "orchestrator.cluster.slurm", "write",
                      "--out", str(storage / f"{name}.sbatch"), "--storage", str(storage),
                      "--name", name, "--cpus-per-task", "1", "--time", "00:15:00",
                      "--assume-shared", "--submit", "--", *FAST, "--set", f"schedule.epochs={epochs}",
                      check=False)
    assert out.returncode == 0, out.stderr
    assert "warning: MLflow in SQLite" in out.stderr  # no --tracking-uri: SQLite, with the warning
    return out.stdout.split("submitted job ")[1].split(";")[0]


@pytest.fixture(scope="module")
def jobs(cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, Path]]]:
    """Both jobs at once, one CPU each: they share the node as two users' jobs would."""
    short, long = tmp_path_factory.mktemp("shared-a"), tmp_path_factory.mktemp("shared-b")
    submitted = {"short": (_submit(cluster, short, "short", 2), short),
                 "long": (_submit(cluster, long, "long", LONG_EPOCHS), long)}
    try:
        yield submitted
    finally:
        for job_id, _ in submitted.values():
            cluster.run("scancel", job_id, check=False)
        for job_id, _ in submitted.values():  # the job's processes end before slurmd does
            deadline = time.monotonic() + 60
            while cluster.job(job_id).get("JobState") not in (None, "COMPLETED", "CANCELLED", "FAILED"):
                if time.monotonic() > deadline:
                    break
                time.sleep(1)


def _wait_done(cluster: SlurmCluster, job_id: str, storage: Path, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (info := cluster.job(job_id)).get("JobState") not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
        if info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime":
            # a requeued job waits before it may start again; this test need not
            cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
        assert time.monotonic() < deadline, f"job {job_id} not done: {info}\n{_markers(_job_log(storage, job_id))}"
        time.sleep(2)
    return info


def _job_log(storage: Path, job_id: str) -> str:
    logs = list((storage / "slurm").glob(f"*-{job_id}.out"))
    return logs[0].read_text(errors="replace") if logs else "(no job log)"


def _markers(log: str) -> str:
    """The batch script's own lines (sparsesweep: ...), for assertion messages."""
    return "\n".join(line for line in log.splitlines() if line.startswith("sparsesweep:")) + log[-3000:]


def _table(storage: Path, name: str) -> dict[str, dict[str, str]]:
    with open(storage / "tune" / name / "results.csv") as f:
        return {row["trial"]: row for row in csv.DictReader(f)}


def _check_mlflow(storage: Path, name: str, epochs: int, trials: int) -> None:
    """One parent run for the sweep, one child per trial, every epoch's metric once."""
    client = MlflowClient(tracking_uri=f"sqlite:///{storage}/mlflow.db")
    exp = client.get_experiment_by_name("sparsesweep-ep_quick")
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    assert [p.info.run_id for p in parents] == [_parent_of(storage, name)]  # reopened, not doubled
    assert parents[0].info.status == "FINISHED"
    children = list(iter_child_runs(client, exp.experiment_id, parents[0].info.run_id))
    assert len(children) == trials
    assert len({c.data.params["method.prune_rate"] for c in children}) == trials
    for child in children:
        for metric in ("train_loss", "test_acc"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, metric)]
            assert steps == list(range(1, epochs + 1)), (metric, steps)


def _parent_of(storage: Path, name: str) -> str:
    return json.loads((storage / "tune" / name / "sparsesweep.json").read_text())["parent_run_id"]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_requeued_job_resumes_the_sweep(cluster: SlurmCluster, jobs: dict[str, tuple[str, Path]]) -> None:
    job_id, storage = jobs["long"]
    sweep_dir = storage / "tune" / "long"
    deadline = time.monotonic() + 300
    finished: dict[str, float] = {}
    while not finished:  # the first trial has reported all its epochs: interrupt the sweep now
        for result in sweep_dir.glob("trial_*/result.json"):
            lines = result.read_text().splitlines()
            if len(lines) >= LONG_EPOCHS:
                finished[json.loads(lines[-1])["trial_id"]] = json.loads(lines[-1])["test_acc"]
        assert cluster.job(job_id).get("JobState") in ("PENDING", "RUNNING"), _markers(_job_log(storage, job_id))
        assert time.monotonic() < deadline, f"no trial finished: {_markers(_job_log(storage, job_id))}"
        time.sleep(0.5)
    cluster.run("scancel", "--signal=USR1", "--batch", job_id)
    info = _wait_done(cluster, job_id, storage, timeout=400)
    log = _job_log(storage, job_id)
    assert info["JobState"] == "COMPLETED", _markers(log)
    assert info["Restarts"] == "1", _markers(log)  # the job requeued itself once, and only once
    assert "USR1 received" in log and "resuming sweep long" in log, _markers(log)
    table = _table(storage, "long")
    assert len(table) == 3 and {row["status"] for row in table.values()} == {"OK"}, table
    assert {row["epoch"] for row in table.values()} == {str(LONG_EPOCHS)}
    for trial_id, acc in finished.items():  # finished before the signal: kept, not run again
        assert float(table[trial_id]["test_acc"]) == pytest.approx(acc), (trial_id, table)
    _check_mlflow(storage, "long", LONG_EPOCHS, trials=3)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_job_runs_the_sweep_to_the_end(cluster: SlurmCluster, jobs: dict[str, tuple[str, Path]]) -> None:
    job_id, storage = jobs["short"]
    info = _wait_done(cluster, job_id, storage, timeout=400)
    log = _job_log(storage, job_id)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", _markers(log)
    assert "Results (sorted by test_acc)" in log, _markers(log)
    table = _table(storage, "short")
    assert len(table) == 3 and {row["status"] for row in table.values()} == {"OK"}, table
    _check_mlflow(storage, "short", 2, trials=3)
    ports = job_ports(int(job_id))  # the head listened on this job's own block of ports
    assert f"Ray at 127.0.0.1:{ports['port']} (manual)" in log


def test_port_blocks_of_two_jobs_never_overlap() -> None:
    def span(job: int) -> set[int]:
        ports = job_ports(job)
        return set(ports.values()) | set(range(ports["min-worker-port"], ports["max-worker-port"] + 1))

    for a, b in ((1, 2), (41, 42), (126, 127), (1000, 1001), (7, 7 + 126)):
        assert not span(a) & span(b), (a, b)
    ports = job_ports(5)
    assert len(set(ports.values())) == len(ports)  # no port used twice within a job
    assert all(20000 <= p < 32768 for p in span(5) | span(10**9))  # above Ray's, below ephemeral


def _write(tmp_path: Path, *args: str) -> tuple[int, str]:
    import contextlib
    import io

    from orchestrator.cluster import slurm

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = slurm.main(["write", "--out", str(tmp_path / "job.sbatch"), *args])
    return code, err.getvalue()


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "s", "--", "--space", "ep_quick"], "--storage: required"),
    (["--storage", "/tmp/runs", "--name", "s"], "is under /tmp, local to one node"),
    (["--storage", "s3://bucket/runs", "--name", "s"], "is a URI"),
    (["--storage", "{shared}", "--assume-shared", "--name", "s", "--", "--storage", "/x"], "--storage are set by the job script"),
    (["--storage", "{shared}", "--assume-shared", "--name", "s", "--", "--space", "no_such_space"], "no_such_space"),
    (["--storage", "{shared}", "--assume-shared", "--name", "s", "--ray-mode", "ssh"], "--ray-mode: 'ssh' is not one of"),
    (["--storage", "{shared}", "--assume-shared", "--name", "s", "--partition", "gpu;rm"], "--partition"),
    (["--storage", "{shared}", "--assume-shared", "--name", "s", "--tracking-uri", "http://127.0.0.1:{port}"],
     "no MLflow server answers"),
])
def test_bad_slurm_job_settings_are_one_line_and_write_nothing(
        tmp_path: Path, args: list[str], message: str) -> None:
    # never created; --assume-shared: these cases are about other settings, wherever the
    # checkout lies (a clone under /tmp would be refused as node-local storage)
    shared = ROOT / ".pytest-shared-storage"
    args = [a.format(shared=shared, port=free_port()) for a in args]
    code, err = _write(tmp_path, *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "job.sbatch").exists() and not shared.exists()


def test_written_script_carries_the_settings(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    code, err = _write(tmp_path, "--storage", str(storage), "--name", "s", "--assume-shared",
                       "--nodes", "4", "--gpus-per-node", "8", "--partition", "gpu",
                       "--account", "lab", "--time", "1-00:00:00", "--ray-mode", "symmetric",
                       "--", "--space", "ep_quick", "--set", "optim.lr=0.1 ")
    assert code == 0, err
    text = (tmp_path / "job.sbatch").read_text()
    for line in ("#SBATCH --nodes=4", "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu",
                 "#SBATCH --account=lab", "#SBATCH --time=1-00:00:00", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --exclusive", "RAY_MODE=symmetric",
                 "SWEEP_ARGS=(--space ep_quick --set 'optim.lr=0.1 ')"):
        assert line in text.splitlines() or line in text, line
    assert "{{" not in text
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sbatch")]).returncode == 0
