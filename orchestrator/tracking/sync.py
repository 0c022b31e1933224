"""`--sync-mlflow`: bring a sweep's MLflow runs up to date from its spool and Tune's own files.

Why: when the tracking server is down at the end of a sweep (or the driver died), MLflow
misses some writes, but nothing is lost: the spool holds what the driver could not send, and
Tune's storage holds every trial's reports (`result.json`), config, checkpoints and errors.
`python -m orchestrator.sweep --storage DIR --resume NAME --sync-mlflow` first replays the
spool in order, then walks the trials Tune recorded and applies the same operations a live
sweep would (`orchestrator.tracking.ops`). Every operation is idempotent, so syncing twice, or
a sweep that lost nothing, changes nothing. No Ray is started and no pickle is read: only
Tune's JSON files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from orchestrator.recovery import error_summary
from orchestrator.settings import RESULT_FILES
from orchestrator.tracking import ops
from orchestrator.tracking.labels import SweepLabels, dataset_input, mask_files, trial_note
from orchestrator.tracking.ops import Op, TrialRecord
from orchestrator.tracking.tags import ERROR_TAG, NOTE_TAG, STATUS_TAG
from orchestrator.tracking.uris import http_health
from orchestrator.tracking.writer import MlflowWriter
from orchestrator.tuner.folder import TuneTrial, read_trials
from trainables.config import ConfigError
from trainables.keys import DIVERGED_KEY
from trainables.mask_figure import MASK_FIGURE

logger = logging.getLogger(__name__)



def trial_ops(trial: TuneTrial, params: dict[str, Any], run_artifacts: set[str],
              labels: SweepLabels | None = None) -> list[Op]:
    """The operations a live sweep would have sent for `trial`, rebuilt from Tune's files.

    `run_artifacts`: the run's artifact paths (top level and ``masks/``); with `labels`, the
    run's name, tags, dataset input and mask figure (`orchestrator.tracking.labels`) too."""
    rec = TrialRecord(trial.trial_id, trial.name,
                      [(p.key, p.value) for p in ops.to_params(params)], str(trial.path))
    extra: list[Op] = []
    if labels is not None:
        rec.run_name = labels.run_name(trial.config, params, trial.trial_id)
        rec.tags = labels.trial_tags(params, trial.trial_id, trial.config)
        try:
            extra.append(ops.inputs_op(rec, [dataset_input(params)]))
        except Exception:
            logger.warning("trial %s: its dataset is not logged as an MLflow input", trial.name,
                           exc_info=True)
    out: list[Op] = [ops.start_op(rec), *extra]
    diverged = False
    last: dict[str, Any] = {}
    for result in trial.results():
        diverged = diverged or bool(result.get(DIVERGED_KEY))
        out += ops.result_ops(rec, result)
        last = result
    ckpt = trial.checkpoint_dir()
    if ckpt is not None and "config.json" not in run_artifacts:
        files = ops.checkpoint_files(ckpt, ops.DEFAULT_ARTIFACT_FILES, trial.name)
        if files:
            out.append(ops.artifacts_op(rec, [(str(p), a) for p, a in files]))
    if ckpt is not None and labels is not None and f"masks/{MASK_FIGURE}" not in run_artifacts:
        files = [(str(p), a) for p, a in ops.checkpoint_files(ckpt, ops.DEFAULT_ARTIFACT_FILES, trial.name)]
        if ops.has_mask_figure(files):  # the trial drew it: uploaded with the checkpoint's files
            if "config.json" in run_artifacts:  # ... which went up before, without it
                out.append(ops.artifacts_op(rec, [(p, a) for p, a in files if ops.has_mask_figure([(p, a)])]))
        elif figure := ops.mask_figure_op(rec, *mask_files(files)):
            out.append(figure)
    if trial.status == "ERROR":
        error_file = trial.path / "error.txt"
        text = error_file.read_text(errors="replace") if error_file.is_file() else ""
        if "error.txt" not in run_artifacts:
            out.append(ops.error_op(rec, text, trial.num_failures))
        out += [ops.tags_op(rec, {STATUS_TAG: "error", ERROR_TAG: error_summary(text)}),
                ops.end_op(rec, "FAILED")]
    elif trial.status == "TERMINATED":
        if not diverged:
            out.append(ops.tags_op(rec, {STATUS_TAG: "finished", NOTE_TAG: trial_note(params, last)}))
        out.append(ops.end_op(rec, "FAILED" if diverged else "FINISHED"))
    else:
        out += [ops.tags_op(rec, {STATUS_TAG: "killed"}), ops.end_op(rec, "KILLED")]
    return out


def sync_mlflow(tracking_uri: str, experiment: str, parent_run_id: str | None, sweep_dir: Path,
                spool_dir: Path, resolve_params: Callable[[dict], dict[str, Any]],
                labels: SweepLabels | None = None) -> int:
    """Replay the spool, then reconcile every trial; print what was done; return an exit code."""
    from orchestrator.tracking.outbox import open_outbox

    if not http_health(tracking_uri):
        raise ConfigError(f"--sync-mlflow: no MLflow server answers at {tracking_uri}; start it "
                          f"and run this again (nothing was changed)")
    if parent_run_id is None:
        raise ConfigError(f"--sync-mlflow: sweep {sweep_dir.name} never created its MLflow run")
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"--sync-mlflow: MLflow at {tracking_uri} has no experiment {experiment!r}")
    box = open_outbox(tracking_uri, exp.experiment_id, parent_run_id, spool_dir)
    spooled = box.spool.pending_count()
    if not box.drain_until(10.0):
        print(f"error: --sync-mlflow: MLflow stopped answering; {box.spool.pending_count()} "
              f"entr(ies) still wait in {box.spool.path}", flush=True)
        return 1
    writer: MlflowWriter = box.writer
    trials = read_trials(sweep_dir)
    for trial in trials:
        run_id = writer.find_child_run(trial.trial_id)
        present = {a.path for a in client.list_artifacts(run_id)} if run_id else set()
        if "masks" in present:
            present |= {a.path for a in client.list_artifacts(run_id, "masks")}
        for op in trial_ops(trial, resolve_params(trial.config), present, labels):
            writer.apply(op)
    parent = client.get_run(parent_run_id)
    present = {a.path for a in client.list_artifacts(parent_run_id)}
    uploaded = [name for name in RESULT_FILES
                if (sweep_dir / name).is_file() and name not in present]
    for name in uploaded:
        client.log_artifact(parent_run_id, str(sweep_dir / name))
    report = None
    if "report" not in present:  # the sweep ended while MLflow was down: the report read nothing
        from orchestrator.report.sweep_end import report_sweep

        report = report_sweep(tracking_uri, experiment, parent_run_id, sweep_dir / "report")
    if parent.info.status == "RUNNING":
        statuses = {t.status for t in trials}
        final = ("KILLED" if statuses - {"TERMINATED", "ERROR"} else
                 "FAILED" if "ERROR" in statuses else "FINISHED")
        client.set_terminated(parent_run_id, status=final)
    print(f"MLflow synced: {spooled} spooled entr(ies) replayed, {len(trials)} trial(s) checked "
          f"against Tune's results, {len(uploaded)} sweep file(s) uploaded "
          f"(experiment {experiment!r}, run {parent_run_id})")
    if report is not None:
        print(f"Report: {report} (also in MLflow, the parent run's report/)")
    return 0
