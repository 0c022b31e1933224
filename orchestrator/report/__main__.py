"""python -m orchestrator.report: the papers' figures from one MLflow experiment's sweeps.

    python -m orchestrator.report --storage /tmp/runs --experiment rep --out report --open

Bad input (unknown experiment or parent run, an --out that cannot be written) ends with one
line `error: ...`, exit 2, and nothing written.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import sys
import threading
from pathlib import Path

# Nothing heavy (pandas, MLflow, matplotlib) is imported before the arguments are parsed:
# `--help` and a bad argument answer at once.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file otherwise


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrator.report", description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True, help="MLflow experiment name (the sweep's --experiment)")
    p.add_argument("--parent", default=None, metavar="RUN_ID", help="one sweep (parent run) only")
    p.add_argument("--out", default=None, help="output directory (default: report-EXPERIMENT)")
    p.add_argument("--storage", default="sparsesweep-runs",
                   help="the sweep's --storage: its SQLite store is the default tracking URI")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (overrides --storage)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the parent run(s)")
    p.add_argument("--open", action="store_true", help="serve the report on 127.0.0.1 until Ctrl-C")
    return p


def _check_out(out: Path) -> None:
    """Writable, or the error line: checked before anything is written."""
    from orchestrator.report.collect import ReportError

    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ReportError(f"--out: {out} cannot be written ({probe} is not a writable directory)")


def _tracking(args: argparse.Namespace) -> str:
    from orchestrator.report.collect import ReportError

    if args.tracking_uri:
        return args.tracking_uri
    storage = Path(args.storage).expanduser()
    if not (storage / "mlflow.db").is_file():
        raise ReportError(f"--storage: no MLflow store {storage / 'mlflow.db'} (give --tracking-uri for a server)")
    from orchestrator.settings import default_tracking_uri

    return default_tracking_uri(storage)


def start_server(out: Path) -> http.server.ThreadingHTTPServer:
    """http.server on 127.0.0.1, a free port, serving `out` from a daemon thread."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve(out: Path) -> None:
    server = start_server(out)
    print(f"Serving the report at http://127.0.0.1:{server.server_port}/index.html (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out or f"report-{args.experiment}").expanduser().resolve()
    from orchestrator.report.collect import ReportError

    try:
        _check_out(out)
        tracking = _tracking(args)
        from orchestrator.report.collect import load_runs

        runs = load_runs(tracking, args.experiment, args.parent)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from orchestrator.report.build import build, log_to_parents

    title = f"sparsesweep report: {args.experiment}" + (f" / {args.parent}" if args.parent else "")
    try:
        report = build(runs, out, title)
        if not args.no_log:
            log_to_parents(runs, report)
    finally:
        runs.close()
    print(f"{len(report.figures)} figure(s), {len(report.missing)} skipped; report: {report.index}")
    if args.open:
        serve(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
