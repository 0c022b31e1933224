"""Shared fixtures: one migrated MLflow store template and one real `mlflow server` per session.

RAY_AUTH_MODE: Ray 2.60 turns token auth on for a new local cluster when the variable is unset
and caches the mode at its first read, so the whole test session (and the CLI subprocesses it
starts, which inherit the environment) decides it once, here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from mlflow import MlflowClient

from orchestrator.settings import default_tracking_uri

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, migrated once; tests copy it (migrations cost ~5 s each)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def fresh_store(migrated_db: Path, storage_dir: Path) -> str:
    """default_tracking_uri(storage_dir), pre-filled with the migrated template."""
    storage_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_db, storage_dir / "mlflow.db")
    return default_tracking_uri(storage_dir)


@contextmanager
def local_ray(module: ModuleType, num_cpus: int) -> Iterator[None]:
    """One real local Ray in this process, for one test module.

    Ray 2.60 turns token auth on for a new local cluster when RAY_AUTH_MODE is unset (it writes
    ~/.ray/auth_token and sets RAY_AUTH_MODE=token in os.environ), and the C++ side caches the
    mode at its first read, so the variable must be decided before the first ray.init of the
    process and then kept: setdefault keeps whatever an earlier test module chose. Workers get
    the driver's cwd on sys.path, not pytest's tests/ dir: `module`'s functions (its
    trainables) travel by value instead of by import.
    """
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(module)
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old


def end_process_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a server's process group (started with start_new_session), SIGKILL after `timeout` s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` subprocess on loopback, proxying artifacts to a local dir."""

    def __init__(self, root: Path, migrated_db: Path) -> None:
        self.root = root
        self.artifacts = root / "server-artifacts"
        self.log_path = root / "mlflow-server.log"
        shutil.copyfile(migrated_db, root / "server.db")
        self.uri = f"http://127.0.0.1:{free_port()}"
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root}/server.db",
            "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", self.uri.rsplit(":", 1)[1], "--workers", "1",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            # Own session, so stop() can end the server and its uvicorn worker as one group.
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # No job runner (huey consumer): tracking doesn't need it and it costs a process.
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )
        self._healthy = False

    def wait_healthy(self, timeout_s: float = 90.0) -> str:
        """Block until GET /health answers 200; returns the tracking URI."""
        deadline = time.monotonic() + timeout_s
        while not self._healthy:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    self._healthy = r.status == 200
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow server not healthy in {timeout_s} s") from None
                time.sleep(0.25)
        return self.uri

    def stop(self) -> None:
        end_process_group(self.proc, timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, migrated_db: Path
) -> Iterator[MlflowServer]:
    """Launched without waiting, so its start-up (imports, uvicorn) overlaps Ray's and the
    SQLite test; the server test waits for /health. Killed in finally."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), migrated_db)
    try:
        yield server
    finally:
        server.stop()




@pytest.fixture
def count_selections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the supermask selection (one per layer per score update is the goal)."""
    import trainables.sparse.supermask as sm

    calls = [0]
    real = sm.topk_mask
    real_band = sm.band_topk_mask

    def counting(scores, keep, allowed=None):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(scores, keep, allowed)

    def counting_band(scores, keep, hint, width, allowed=None):  # type: ignore[no-untyped-def]
        found = real_band(scores, keep, hint, width, allowed)
        calls[0] += found is not None  # a miss falls back to topk_mask, which counts itself
        return found

    monkeypatch.setattr(sm, "topk_mask", counting)
    monkeypatch.setattr(sm, "band_topk_mask", counting_band)
    return calls
