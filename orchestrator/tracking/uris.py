"""MLflow tracking URIs: which are supported, where their artifacts go, whether the server
answers, and the command that opens them. Light (no MLflow import): the CLI checks a URI
before anything starts."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from orchestrator.checks import check_db_url, check_writable, one_line, parse_url
from orchestrator.settings import default_tracking_uri, local_artifact_root
from trainables.config import ConfigError

__all__ = ["artifact_root_for", "check_tracking_server", "check_tracking_uri", "check_writable",
           "default_tracking_uri", "fail_fast_http", "http_health", "refuse_password", "runnable",
           "tracking_ui_command"]

REMOTE_SCHEMES = frozenset({"http", "https", "databricks"})
# MLflow's database stores (SQLAlchemy dialects, optionally +DRIVER) and its servers
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SUPPORTED = ("sqlite:///PATH", "http(s)://HOST:PORT", "postgresql://", "mysql://", "mssql://",
             "databricks (with DATABRICKS_HOST or ~/.databrickscfg)")


def scheme(uri: str) -> str:
    return urlparse(uri).scheme.lower()


def artifact_root_for(uri: str, storage_dir: Path) -> str | None:
    """Artifact location for new experiments, or None to let an HTTP server decide.

    A local/DB store has no artifact server, so artifacts go next to the database
    (``storage_dir/mlartifacts``); a tracking server proxies artifacts itself
    (``mlflow-artifacts:/``), and a client-chosen local path would be wrong on other hosts.
    """
    if scheme(uri) in REMOTE_SCHEMES:
        return None
    return local_artifact_root(storage_dir)


def tracking_ui_command(uri: str, sweep: str = "") -> str:
    """The command a user runs to look at the sweep (printed at the end of a sweep). A local
    SQLite store: `orchestrator.tracking.ui`, which serves MLflow's UI on a free port and prints
    the link to the sweep's saved view on that port (`mlflow ui` itself opens on its GenAI home)."""
    if scheme(uri) in ("http", "https"):
        return f"open {uri}"
    if uri.startswith("sqlite:///") and uri.endswith("/mlflow.db"):
        storage = uri.removeprefix("sqlite:///").removesuffix("/mlflow.db")
        sweep_arg = f" --sweep {shlex.quote(sweep)}" if sweep else ""
        return f"python -m orchestrator.tracking.ui --storage {shlex.quote(storage)}{sweep_arg}"
    return f"mlflow ui --backend-store-uri {uri}"


def runnable(command: str) -> str:
    """A printed `mlflow ...` command that works as it is: `mlflow` may exist only in the venv
    that runs this sweep (`make sweep` does not activate it)."""
    if command.startswith("python -m "):
        return f"{shlex.quote(sys.executable)}{command[len('python'):]}"
    exe = Path(sys.executable).parent / "mlflow"
    if command.startswith("mlflow ") and exe.is_file() and shutil.which("mlflow") != str(exe):
        return f"{exe}{command[len('mlflow'):]}"
    return command


def fail_fast_http() -> None:
    """MLflow's client retries a dead server for minutes per call, blocking Tune's event loop;
    the spool retries instead, so calls fail fast (a user's own settings win)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def health_problem(uri: str, timeout_s: float = 3.0) -> str | None:
    """Why an http(s) tracking server does not answer /health with 200, or None (other stores:
    always None). The one /health probe: the CLI's check and the spool's retry both use it."""
    if urlparse(uri).scheme not in ("http", "https"):
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as reply:
            return None if reply.status == 200 else f"/health answered {reply.status}"
    except OSError as e:
        return str(e)


def http_health(uri: str, timeout_s: float = 3.0) -> bool:
    """True when an http(s) tracking server answers /health (other stores: always True)."""
    return health_problem(uri, timeout_s) is None


def check_tracking_server(uri: str, timeout_s: float = 10.0) -> None:
    """An http(s) tracking URI must answer MLflow's /health before any trial starts."""
    if (problem := health_problem(uri, timeout_s)) is not None:
        raise ConfigError(f"--tracking-uri: no MLflow server answers at {uri} ({problem})")


def check_tracking_uri(uri: str) -> None:
    """A tracking URI MLflow can open here: its scheme supported, its URL well formed, a
    database's driver installed and its SQLite file creatable, Databricks configured."""
    flag = "--tracking-uri"
    refuse_password(uri, flag, "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                               "(or the database's own password file)")
    parts = parse_url(flag, uri)
    kind = parts.scheme.lower().partition("+")[0]
    allowed = f"use one of {', '.join(SUPPORTED)} (MLflow 3 has no ./mlruns file store)"
    if kind in ("http", "https"):
        if not parts.hostname:
            raise ConfigError(f"{flag}: {one_line(repr(uri))} names no host; {allowed}")
    elif kind in DB_SCHEMES:
        if kind == "sqlite" and not uri.startswith("sqlite:///"):
            raise ConfigError(f"{flag}: {one_line(repr(uri))} is not supported; {allowed}")
        check_db_url(flag, uri)
    elif uri.split("://")[0].lower() == "databricks":
        if not (os.environ.get("DATABRICKS_HOST") or (Path.home() / ".databrickscfg").is_file()):
            raise ConfigError(f"{flag}: databricks needs a Databricks workspace configured (DATABRICKS_HOST "
                              f"and DATABRICKS_TOKEN, or ~/.databrickscfg); none is")
    else:
        raise ConfigError(f"{flag}: {one_line(repr(uri))} is not supported; {allowed}")
    from orchestrator.cluster.shared_db import check_server_uri

    check_server_uri(uri, flag)  # a database server answers


def refuse_password(uri: str, flag: str, instead: str) -> None:
    """A password in a URI would be saved in sparsesweep.json and printed: take it from the env."""
    try:
        secret = urlparse(uri).password
    except ValueError:
        secret = None
    if secret:
        raise ConfigError(f"{flag}: the URI holds a password, which would be written to the sweep's "
                          f"files and logs; remove it and set {instead}")
