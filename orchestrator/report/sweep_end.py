"""The report at the end of a sweep (called by orchestrator.driver): its own parent run only,
under the sweep's directory (or a temporary one for remote storage), logged to the parent."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def report_sweep(tracking_uri: str, experiment: str, parent_run_id: str, out_dir: Path | None) -> Path | None:
    """Write and log the sweep's report; return its index.html (None when it could not be made).

    A failure here never fails the sweep: its results are already in MLflow and Tune's
    directory, and `python -m orchestrator.report` can be run again.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from orchestrator.report.build import build, log_to_parents
    from orchestrator.report.collect import load_runs, sweep_name

    out = out_dir or Path(tempfile.mkdtemp(prefix="sparsesweep-report-"))
    try:
        runs = load_runs(tracking_uri, experiment, parent_run_id)
        try:
            name = sweep_name(runs.parents[parent_run_id]) if parent_run_id in runs.parents else parent_run_id
            report = build(runs, out, f"sparsesweep report: {experiment} / {name}", quiet_missing=True)
            log_to_parents(runs, report)
        finally:
            runs.close()
    except Exception as e:  # noqa: BLE001 - reported, never fatal (see above)
        print(f"warning: the report could not be made ({type(e).__name__}: {e}); rerun it with "
              f"python -m orchestrator.report --experiment {experiment} --parent {parent_run_id}", file=sys.stderr)
        return None
    if report.missing:
        print(f"{len(report.figures)} report figure(s); {len(report.missing)} need other spaces (listed in "
              f"index.html)")
    return report.index
