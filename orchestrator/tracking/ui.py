"""python -m orchestrator.tracking.ui: MLflow's UI of a sweep storage, and the one link that
opens a sweep's saved view on the port the UI really serves.

    python -m orchestrator.tracking.ui --storage sparsesweep-runs [--port 5123] [--sweep NAME]

`mlflow ui` opens on its GenAI home, and the experiment page on an empty traces dashboard;
the link printed here goes to the runs table in "Model training" mode with the sweep's saved
view (method, test accuracy, density, dying ratio first; accuracy-against-density and
per-cycle charts). Without --port a free port is chosen. Without --sweep: the latest sweep.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SQLITE_NAME = "mlflow.db"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrator.tracking.ui", description=__doc__.splitlines()[0])
    p.add_argument("--storage", default="sparsesweep-runs", help="the sweep's --storage (its mlflow.db)")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--sweep", default=None, help="the sweep (--name) whose view to link (default: the latest)")
    p.add_argument("--print-only", action="store_true", help="print the link and the command, serve nothing")
    return p


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def sweep_views(tracking_uri: str, sweep: str | None) -> list[tuple[str, str, str]]:
    """(sweep name, experiment id, view key) of the sweep (or the latest sweep) that has a saved view."""
    from mlflow import MlflowClient

    from orchestrator.tracking.tags import KIND_TAG, SWEEP_NAME_TAG, VIEW_TAG_PREFIX
    from orchestrator.tracking.views import view_key

    client = MlflowClient(tracking_uri)
    where = f"tags.`{KIND_TAG}` = 'sweep'" + (f" and tags.`{SWEEP_NAME_TAG}` = '{sweep}'" if sweep else "")
    exps = {e.experiment_id: e for e in client.search_experiments()}
    runs = client.search_runs(list(exps), where, order_by=["attributes.start_time DESC"], max_results=50)
    out = []
    for run in runs:
        name = run.data.tags.get(SWEEP_NAME_TAG, "")
        tags = exps[run.info.experiment_id].tags
        key = view_key(name)
        if VIEW_TAG_PREFIX + key in tags:
            out.append((name, run.info.experiment_id, key))
    return out


def links(base: str, tracking_uri: str, sweep: str | None) -> list[str]:
    from orchestrator.tracking.views import view_url

    found = sweep_views(tracking_uri, sweep)
    if not found:
        return [f"{base}/#/experiments?workflowType=machine_learning"]
    name, exp, key = found[0]
    return [f"Sweep {name!r}, runs table: {view_url(tracking_uri, exp, key, base=base)}",
            f"Sweep {name!r}, charts:     {view_url(tracking_uri, exp, key, base=base, charts=True)}"]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    storage = Path(args.storage).expanduser().resolve()
    db = storage / SQLITE_NAME
    if not db.is_file():
        print(f"error: --storage: no MLflow store {db} (run a sweep with --storage {args.storage} first)",
              file=sys.stderr)
        return 2
    if not 0 <= args.port < 65536:
        print(f"error: --port: {args.port} is not a port (0..65535; 0 = a free one)", file=sys.stderr)
        return 2
    from orchestrator.settings import default_tracking_uri

    tracking = default_tracking_uri(storage)
    port = args.port or free_port(args.host)
    base = f"http://{args.host}:{port}"
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow) if mlflow.is_file() else "mlflow", "ui", "--backend-store-uri", tracking,
           "--host", args.host, "--port", str(port)]
    lines = links(base, tracking, args.sweep)
    if args.print_only:
        print(" ".join(cmd))
        print("\n".join(lines))
        return 0
    proc = subprocess.Popen(cmd, start_new_session=True)
    # Ctrl-C, and a plain kill (a background job ignores SIGINT): stop MLflow's whole group
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        _wait_up(base, proc)
        print("MLflow UI at " + base + " (Ctrl-C stops). One click to the sweep's saved view:", flush=True)
        print("\n".join(lines), flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_up(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)


if __name__ == "__main__":
    raise SystemExit(main())
