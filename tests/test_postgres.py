"""A lab's shared tracking server, run for real: PostgreSQL (initdb + pg_ctl as an unprivileged
user, on 127.0.0.1 at a free port, its socket in a temp dir), `mlflow server` on it with
`--serve-artifacts` and basic auth, and two sweep drivers joining one Optuna study in the same
PostgreSQL at once. Checked: the study holds each driver's share of trials, none sampled twice;
MLflow holds one parent run per driver tagged with the study and one child run per Optuna
trial; the password is in no run, no sweep file and no output.

Skipped without PostgreSQL's binaries unless SPARSESWEEP_REQUIRE_POSTGRES=1 (CI).
The bad-input cases that need no server run everywhere.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from conftest import end_process_group, free_port
from orchestrator.cluster.shared_db import driver_seed, existing_studies
from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG, STUDY_TAG

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--space", "ep_quick", "--search", "optuna", "--set", "run.max_steps_per_epoch=3",
        "--set", "data.batch_size=32", "--set", "schedule.epochs=2", "--max-concurrent", "1",
        "--num-cpus", "1", "--experiment", "lab"]
SHARES = {"drv-a": 3, "drv-b": 2}  # each driver's --num-samples; the second joins while the first runs


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def sweep(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


class Postgres:
    """A PostgreSQL cluster of its own, run by the `postgres` user when the tests run as root
    (PostgreSQL refuses root), with fsync off (a test database)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="sparsesweep-pg-", dir="/tmp"))  # the user can reach it
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.port = free_port()
        self.pid: int | None = None
        data = self.dir / "data"
        self._as_user(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                      "--no-sync", "-E", "UTF8")
        self._as_user(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "postgres.log"),
                      "-w", "-t", "60", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} -F", "start")
        self.pid = int((data / "postmaster.pid").read_text().split()[0])

    def _as_user(self, *cmd: str) -> None:
        owner = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []} if self.user else {}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dir, **owner)
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def create_databases(self, *names: str) -> None:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        con.autocommit = True
        with con.cursor() as cur:
            for name in names:
                cur.execute(f"CREATE DATABASE {name}")
        con.close()

    def stop(self) -> None:
        if self.pid is not None:  # SIGINT: PostgreSQL's fast shutdown
            try:
                os.kill(self.pid, signal.SIGINT)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    os.kill(self.pid, 0)
                    time.sleep(0.2)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        if os.environ.get("SPARSESWEEP_REQUIRE_POSTGRES") == "1":
            pytest.fail("SPARSESWEEP_REQUIRE_POSTGRES=1 but PostgreSQL's initdb is missing (Debian: postgresql)")
        pytest.skip("PostgreSQL binaries missing (Debian: postgresql)")
    pg = Postgres(bin_dir)
    try:
        pg.create_databases("mlflow", "mlflow_auth", "optuna")
        yield pg
    finally:
        pg.stop()


class LabServer:
    """`mlflow server` on PostgreSQL, artifacts served by itself, basic auth with an admin whose
    password is random (MLflow's default one must never be kept)."""

    def __init__(self, pg: Postgres, root: Path) -> None:
        self.password = secrets.token_urlsafe(16)
        config = root / "basic_auth.ini"
        config.write_text("[mlflow]\ndefault_permission = READ\n"
                          f"database_uri = {pg.url('mlflow_auth')}\n"
                          f"admin_username = admin\nadmin_password = {self.password}\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        config.chmod(0o600)
        self.uri = f"http://127.0.0.1:{free_port()}"
        self.log = root / "mlflow-server.log"
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", pg.url("mlflow"),
               "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
               "--app-name", "basic-auth", "--host", "127.0.0.1",
               "--port", self.uri.rsplit(":", 1)[1], "--workers", "1"]
        env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config),
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def wait_healthy(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()[-4000:]
            time.sleep(0.5)


@pytest.fixture(scope="module")
def lab(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    server = LabServer(postgres, tmp_path_factory.mktemp("lab"))
    try:
        server.wait_healthy()
        yield server
    finally:
        end_process_group(server.proc, timeout=10)


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_two_drivers_join_one_study_on_the_lab_server(postgres: Postgres, lab: LabServer,
                                                     tmp_path: Path) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:  # the server is not open to anyone
        urllib.request.urlopen(f"{lab.uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert refused.value.code == 401
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
           "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": lab.password}
    optuna_url = postgres.url("optuna")

    def start(name: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.sweep", *FAST, "--name", name,
             "--storage", str(tmp_path / name), "--tracking-uri", lab.uri,
             "--optuna-storage", optuna_url, "--study", "lab-study",
             "--num-samples", str(SHARES[name]), *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start("drv-a")  # creates the study
    deadline = time.monotonic() + 240
    while "lab-study" not in existing_studies(optuna_url):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first driver never created the study"
        time.sleep(0.5)
    second = start("drv-b", "--join-study")  # joins it while the first one runs
    outputs = {}
    for name, proc in (("drv-a", first), ("drv-b", second)):
        out, err = proc.communicate(timeout=420)
        assert proc.returncode == 0, (name, out[-3000:], err[-3000:])
        outputs[name] = out + err

    study = optuna.load_study(study_name="lab-study",
                              storage=optuna.storages.RDBStorage(optuna_url, skip_table_creation=True))
    trials = study.trials
    assert len(trials) == sum(SHARES.values())  # each driver ran its share, and only that
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    points = {tuple(sorted(t.params.items())) for t in trials}
    assert len(points) == len(trials), "a point was sampled twice"

    # credentials from the environment, as the drivers get them
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", lab.password
    try:
        client = MlflowClient(tracking_uri=lab.uri)
        exp = client.get_experiment_by_name("lab")
        parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = 'lab-study'")
        assert len(parents) == 2 and all(p.data.tags[KIND_TAG] == "sweep" for p in parents)
        by_parent = {}
        for name in SHARES:
            state = json.loads((tmp_path / name / "tune" / name / "sparsesweep.json").read_text())
            assert state["study"] == "lab-study" and lab.password not in json.dumps(state)
            by_parent[name] = list(iter_child_runs(client, exp.experiment_id, state["parent_run_id"]))
            assert len(by_parent[name]) == SHARES[name], name
        logged = [(round(float(c.data.params["method.prune_rate"]), 9), round(float(c.data.params["optim.lr"]), 9))
                  for runs in by_parent.values() for c in runs]
        sampled = [(round(t.params["method.prune_rate"], 9), round(t.params["optim.lr"], 9)) for t in trials]
        assert sorted(logged) == sorted(sampled)  # each Optuna trial has exactly one MLflow run
        for run in [*parents, *(c for runs in by_parent.values() for c in runs)]:
            assert lab.password not in json.dumps({**run.data.params, **run.data.tags})
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")]
            assert run in parents or steps == [1, 2], steps
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    for name, text in outputs.items():
        assert lab.password not in text, name


@pytest.mark.integration
def test_joining_a_study_that_does_not_exist_is_refused(postgres: Postgres, tmp_path: Path) -> None:
    done = sweep(*FAST, "--storage", str(tmp_path), "--optuna-storage", postgres.url("optuna"),
                 "--study", "nobody-made-this", "--join-study", "--dry-run", env=dict(os.environ))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "no study 'nobody-made-this'" in done.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_postgres_uri_without_its_driver_is_refused(tmp_path: Path) -> None:
    """SQLAlchemy's default PostgreSQL driver is psycopg 3, not installed here: one line naming
    the driver that is (psycopg2-binary), before anything starts."""
    pytest.importorskip("psycopg2")
    if _has_module("psycopg"):
        pytest.skip("psycopg 3 is installed: postgresql:// has its driver")
    done = sweep(*FAST, "--storage", str(tmp_path), "--optuna-storage", "postgresql://u@127.0.0.1:1/db",
                 "--dry-run", env=dict(os.environ))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "driver 'psycopg' is not installed" in done.stderr and "postgresql+psycopg2://" in done.stderr
    assert not any(tmp_path.iterdir())


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.parametrize("flag", ["--optuna-storage", "--tracking-uri"])
def test_an_unreachable_database_is_refused(tmp_path: Path, flag: str) -> None:
    pytest.importorskip("psycopg2")
    dead = f"postgresql+psycopg2://u@127.0.0.1:{free_port()}/db"  # nothing listens there
    done = sweep(*FAST, "--storage", str(tmp_path), flag, dead, "--dry-run", env=dict(os.environ))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{flag}: cannot connect to the database at 127.0.0.1:" in done.stderr
    assert not any(tmp_path.iterdir())


def test_drivers_of_one_study_get_different_seeds() -> None:
    assert driver_seed(0, "drv-a") != driver_seed(0, "drv-b")
    assert driver_seed(0, "drv-a") == driver_seed(0, "drv-a")  # stable: a resumed driver keeps it
    # random samplers seeded alike propose the same first point; seeded apart they do not
    def first_point(seed: int) -> float:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return study.ask().suggest_float("x", 0.0, 1.0)

    assert first_point(driver_seed(0, "drv-a")) != first_point(driver_seed(0, "drv-b"))
    assert first_point(7) == first_point(7)
