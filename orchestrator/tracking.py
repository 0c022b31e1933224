"""MLflow tracking of a sweep: one parent run per sweep, one child run per Tune trial.

Why every MLflow call happens in the Ray *driver* (the Tune controller process):

- One writer. A sweep runs many trials at once; if every trial process opened its own
  MLflow run, N processes would write one SQLite file concurrently and hit
  "database is locked" (MLflow 3's default store is SQLite). Tune already funnels every
  result and checkpoint of every trial through the driver, so a ``tune.Callback`` sees all
  of them in order, in one process, with no extra RPC.
- Same code for every backend. Trials on remote GPU nodes need neither network access to
  the tracking server nor MLflow credentials; a laptop SQLite file and a cluster
  ``mlflow server`` behave the same because only the driver talks to them.
- Trainables stay free of MLflow (``trainables/`` must run in a notebook); the masks they
  checkpoint are uploaded from Tune's persisted checkpoint when the trial completes.
- Resume is idempotent: child runs are found by tags (parent run id + Tune trial id), so
  ``Tuner.restore`` re-attaches to the runs it created instead of duplicating them.

Costs: each call blocks the Tune event loop for one round trip to the store (uploading
masks at trial end takes as long as the copy). Metrics go out once per reported result in
one ``log_batch``, so this stays small next to an epoch of training.

Failure policy: a logging failure (a server restarting, a network cut, a locked database)
must neither kill nor stall a sweep of thousands of GPU hours, and must lose nothing. So
every write is an operation (`orchestrator.mlflow_ops`) appended first to a durable spool
in the sweep's directory (`orchestrator.spool`), then applied. While MLflow does not answer,
operations wait there (training goes on; the driver only probes the server's /health now
and then) and are replayed in order, without duplicates, when it answers again, or later by
``python -m orchestrator.sweep --storage DIR --resume NAME --sync-mlflow``. An operation MLflow
refuses for good (a bad value) is skipped with a warning. Pass ``strict=True`` (tests do)
to re-raise any failure instead, which makes ``Tuner.fit()`` fail.

Note on ``Tuner.restore``: Tune pickles ``RunConfig`` (callbacks included) into
``tuner.pkl`` and restores that copy, so the callback must be picklable (the MLflow client
is created lazily and dropped on pickling) and a restored sweep logs to the parent run it
was created with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import RunTag, ViewType
from mlflow.exceptions import MlflowException
from ray.train import Checkpoint
from ray.tune import Callback

from orchestrator.mlflow_ops import (
    BOOKKEEPING_KEYS,
    DEFAULT_ARTIFACT_FILES,
    DIVERGED_KEY,
    ERROR_TAG,
    KIND_TAG,
    MAX_PARAMS_PER_BATCH,
    NUM_FAILURES_TAG,
    PARENT_TAG,
    STATUS_TAG,
    SWEEP_NAME_TAG,
    TERMINAL,
    TRAIN_CHECKPOINT_KEY,
    TRIAL_ID_TAG,
    TRIAL_NAME_TAG,
    TRIAL_PATH_TAG,
    MlflowWriter,
    TrialRecord,
    artifacts_op,
    checkpoint_files,
    chunks,
    end_op,
    error_op,
    extract_metrics,
    has_mask_figure,
    inputs_op,
    is_permanent,
    log_params,
    metric_steps,
    parent_artifact_op,
    parent_end_op,
    result_ops,
    start_op,
    tags_op,
    to_params,
)
from orchestrator.mlflow_ui import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    SweepLabels,
    dataset_input,
)
from orchestrator.recovery import error_summary
from orchestrator.schedulers import STOPPED_TAG, stop_tag
from orchestrator.spool import Outbox, Spool, http_health
from orchestrator.sqlite_store import seed_sqlite_store

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)

__all__ = [
    "BOOKKEEPING_KEYS",
    "DEFAULT_ARTIFACT_FILES",
    "ERROR_TAG",
    "KIND_TAG",
    "MLflowTrialCallback",
    "PARENT_TAG",
    "STATUS_TAG",
    "SweepTracker",
    "TRIAL_ID_TAG",
    "TRIAL_NAME_TAG",
    "TRIAL_PATH_TAG",
    "artifact_root_for",
    "default_tracking_uri",
    "extract_metrics",
    "iter_child_runs",
    "metric_steps",
    "open_outbox",
    "tracking_ui_command",
]

_REMOTE_SCHEMES = frozenset({"http", "https", "databricks"})
# How long the end of a sweep keeps retrying MLflow before leaving the rest to --sync-mlflow.
FINAL_DRAIN_S = float(os.environ.get("SPARSESWEEP_MLFLOW_FINAL_WAIT_S", "20"))
# Longest wait between two attempts while MLflow does not answer (each is one /health probe).
MAX_BACKOFF_S = float(os.environ.get("SPARSESWEEP_MLFLOW_MAX_BACKOFF_S", "60"))


# --------------------------------------------------------------------------- URIs


def default_tracking_uri(storage_dir: Path) -> str:
    """SQLite store inside the sweep's storage dir: zero setup, one file to copy around."""
    return f"sqlite:///{Path(storage_dir).expanduser().resolve()}/mlflow.db"


def _scheme(uri: str) -> str:
    return urlparse(uri).scheme.lower()


def artifact_root_for(uri: str, storage_dir: Path) -> str | None:
    """Artifact location for new experiments, or None to let an HTTP server decide.

    A local/DB store has no artifact server, so artifacts go next to the database
    (``storage_dir/mlartifacts``); a tracking server proxies artifacts itself
    (``mlflow-artifacts:/``), and a client-chosen local path would be wrong on other hosts.
    """
    if _scheme(uri) in _REMOTE_SCHEMES:
        return None
    return (Path(storage_dir).expanduser().resolve() / "mlartifacts").as_uri()


def tracking_ui_command(uri: str) -> str:
    """The command a user runs to look at the sweep (printed at the end of a sweep)."""
    if _scheme(uri) in ("http", "https"):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def fail_fast_http() -> None:
    """MLflow's client retries a dead server for minutes per call, blocking Tune's event loop;
    the spool retries instead, so calls fail fast (a user's own settings win)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


class MlflowOutbox(Outbox):
    """The outbox of one sweep's MLflow writes, with the writer that applies them."""

    def __init__(self, spool: Spool, writer: MlflowWriter, *, strict: bool = False) -> None:
        super().__init__(spool, writer.apply, probe=lambda: http_health(writer.tracking_uri),
                         permanent=is_permanent, strict=strict,
                         first_backoff_s=min(2.0, MAX_BACKOFF_S), max_backoff_s=MAX_BACKOFF_S)
        self.writer = writer


# One outbox per (spool, parent run) in this process: the parent tracker and the Tune
# callback share it, so their writes keep one order.
_OUTBOXES: dict[tuple[int, str], MlflowOutbox] = {}


def open_outbox(tracking_uri: str, experiment_id: str, parent_run_id: str,
                spool_dir: str | Path | None, *, strict: bool = False) -> MlflowOutbox:
    """The outbox that applies this sweep's MLflow operations, spooled in `spool_dir`."""
    fail_fast_http()
    spool = Spool.open(None if spool_dir is None else Path(spool_dir))
    key = (id(spool), parent_run_id)
    box = _OUTBOXES.get(key)
    if box is None:
        box = MlflowOutbox(spool, MlflowWriter(tracking_uri, experiment_id, parent_run_id),
                           strict=strict)
        if spool_dir is not None:
            _OUTBOXES[key] = box
    box.strict = box.strict or strict
    return box


def spool_hint(box: Outbox | None, storage: str, name: str) -> str | None:
    """What to tell the user when operations are still waiting, or None."""
    if box is None or not (left := box.spool.pending_count()):
        return None
    unsaved = box.spool.unsaved_count()
    where = (f"{left - unsaved} wait in {box.spool.path}" if not unsaved else
             f"{unsaved} could not even be spooled (full disk?) and are rebuilt from Tune's results")
    return (f"MLflow did not take {left} logging entr(ies): {where}. The results are complete in "
            f"Tune's storage. When MLflow (and the disk) are back, replay them with:\n"
            f"  python -m orchestrator.sweep --storage {storage} --resume {name} --sync-mlflow")


# --------------------------------------------------------------------------- parent run


class SweepTracker:
    """Parent run of one sweep; the driver owns it for the sweep's lifetime.

    Uses ``MlflowClient`` with explicit run ids, never MLflow's global active run, so it
    can live next to other MLflow users in the same process (e.g. notebooks). An existing
    experiment is reused as is, artifact location included (MLflow fixes it at creation).
    Creating the parent needs MLflow to answer; what follows (figures, the final status) goes
    through the sweep's spool when `spool_dir` is given, so an outage at the end loses nothing.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, storage_dir: Path,
                 spool_dir: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.storage_dir = Path(storage_dir).expanduser().resolve()
        self.spool_dir = spool_dir
        fail_fast_http()
        if _scheme(tracking_uri) == "sqlite":
            # SQLite creates the file but not its directory.
            db_path = Path(urlparse(tracking_uri).path)
            db_path.parent.mkdir(parents=True, exist_ok=True)
            seed_sqlite_store(db_path)  # no schema migration for a new store (orchestrator.sqlite_store)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._get_or_create_experiment()
        self._run_id: str | None = None

    @property
    def run_id(self) -> str:
        """Parent run id; only valid after :meth:`start`."""
        if self._run_id is None:
            raise RuntimeError("SweepTracker.start() has not been called")
        return self._run_id

    @property
    def outbox(self) -> MlflowOutbox | None:
        """The sweep's outbox (None without a spool directory: direct calls)."""
        if self.spool_dir is None:
            return None
        return open_outbox(self.tracking_uri, self.experiment_id, self.run_id, self.spool_dir)

    def _get_or_create_experiment(self) -> str:
        """The experiment's id; it is tagged as a machine-learning experiment (MLflow's UI then
        opens it on the runs table, not the GenAI overview) unless it already has a kind."""
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            try:
                return self.client.create_experiment(
                    self.experiment_name,
                    artifact_location=artifact_root_for(self.tracking_uri, self.storage_dir),
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            except MlflowException:
                # Another sweep created it between our get and create.
                exp = self.client.get_experiment_by_name(self.experiment_name)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise RuntimeError(
                f"MLflow experiment {self.experiment_name!r} (id {exp.experiment_id}) is deleted; "
                "restore it (MlflowClient().restore_experiment) or pick another name"
            )
        return exp.experiment_id

    def start(
        self,
        sweep_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
        resume_run_id: str | None = None,
        *,
        run_name: str | None = None,
        note: str | None = None,
        experiment_tags: Mapping[str, str] | None = None,
    ) -> str:
        """Create the parent run, or re-open ``resume_run_id`` for ``--resume``; return its id.

        `run_name` (default: the sweep's name) and `note`, the run's description (the command
        line that started the sweep), are set when the run is created; a resumed run keeps its own.
        """
        for key, value in (experiment_tags or {}).items():  # e.g. a saved view (mlflow_ui)
            self.client.set_experiment_tag(self.experiment_id, key, value)
        all_tags = {str(k): str(v) for k, v in tags.items()}
        all_tags[KIND_TAG] = "sweep"
        all_tags[SWEEP_NAME_TAG] = sweep_name
        if resume_run_id is not None:
            run = self.client.get_run(resume_run_id)
            if run.info.experiment_id != self.experiment_id:
                raise ValueError(
                    f"run {resume_run_id} belongs to experiment {run.info.experiment_id}, "
                    f"not {self.experiment_name!r} ({self.experiment_id})"
                )
            if run.data.tags.get(KIND_TAG) != "sweep":
                raise ValueError(f"run {resume_run_id} is not a sparsesweep sweep run")
            self._run_id = resume_run_id
            if self.outbox is not None:
                self.outbox.drain(force=True)  # what an earlier run of this sweep left behind
            self.client.update_run(resume_run_id, status="RUNNING")
            log_params(self.client, resume_run_id, to_params(params), existing=run.data.params)
            self._set_tags(resume_run_id, all_tags)
            return resume_run_id
        if note:
            all_tags[NOTE_TAG] = note
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name or sweep_name)
        self._run_id = run.info.run_id
        log_params(self.client, self._run_id, to_params(params))
        return self._run_id

    def _set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        items = [RunTag(k, v) for k, v in tags.items()]
        for batch in chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=list(batch), synchronous=True)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the parent run terminated (FINISHED, FAILED or KILLED)."""
        if status not in TERMINAL:
            raise ValueError(f"status must be one of {TERMINAL}, got {status!r}")
        if (box := self.outbox) is not None:
            box.submit(parent_end_op(status))
            if box.spool.pending_count():  # one wait per sweep end: none if already waited out
                box.drain_until(0 if box.down else FINAL_DRAIN_S)
            return
        self.client.set_terminated(self.run_id, status=status)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Attach a file (sweep spec, report, figure) to the parent run."""
        if (box := self.outbox) is not None:
            (kept, apath), = box.spool.keep_files([(Path(local_path), artifact_path or "")])
            box.submit(parent_artifact_op(kept, apath))
            return
        self.client.log_artifact(self.run_id, str(local_path), artifact_path or None)


# --------------------------------------------------------------------------- child runs


class MLflowTrialCallback(Callback):
    """Tune callback (runs in the driver) that mirrors each trial into a child MLflow run.

    Each hook turns the event into operations (`orchestrator.mlflow_ops`) and hands them to
    the sweep's outbox: spooled durably in `spool_dir` (memory only when None), then applied.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        resolve_params: Callable[[dict], dict[str, Any]],
        artifact_files: Sequence[tuple[str, str, bool]] = DEFAULT_ARTIFACT_FILES,
        *,
        strict: bool = False,
        spool_dir: str | Path | None = None,
        labels: SweepLabels | None = None,
    ) -> None:
        """`labels` (from the sweep's plan) names the runs and tags them, and logs each
        trial's dataset as an MLflow input; without it runs take Tune's trial names."""
        self.tracking_uri = tracking_uri
        self.labels = labels
        self.experiment_id = str(experiment_id)
        self.parent_run_id = parent_run_id
        self.resolve_params = resolve_params
        self.artifact_files = tuple((str(f), str(p), bool(r)) for f, p, r in artifact_files)
        self.strict = strict
        self.spool_dir = None if spool_dir is None else str(spool_dir)
        self.failures = 0
        self._box: MlflowOutbox | None = None
        self._known: set[str] = set()  # trial ids whose start was submitted
        self._open: set[str] = set()  # trial ids whose run is RUNNING
        self._diverged: set[str] = set()

    # Tune pickles RunConfig (tuner.pkl); a live client/outbox must not travel with it.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_box=None, _known=set(), _open=set(), _diverged=set(), failures=0)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("spool_dir", None)  # callbacks pickled before the spool existed
        state.setdefault("labels", None)  # ... or before the run names
        state.setdefault("_diverged", set())
        state.setdefault("_known", set())
        self.__dict__.update(state)

    @property
    def outbox(self) -> MlflowOutbox:
        if self._box is None:
            self._box = open_outbox(self.tracking_uri, self.experiment_id, self.parent_run_id,
                                    self.spool_dir, strict=self.strict)
        return self._box

    @property
    def writer(self) -> MlflowWriter:
        return self.outbox.writer

    @property
    def client(self) -> MlflowClient:
        return self.writer.client

    # ------------------------------------------------------------------ find-or-create

    def find_child_run(self, trial_id: str) -> str | None:
        """Run id of this sweep's child run for ``trial_id`` in the store, if any."""
        return self.writer.find_child_run(trial_id)

    def find_or_create_child_run(
        self,
        trial_id: str,
        trial_name: str,
        config: dict,
        extra_tags: Mapping[str, str] | None = None,
    ) -> str:
        """Child run for a trial, looked up in the store first so ``--resume`` reuses it."""
        return self.writer.find_or_create_child_run(
            trial_id, trial_name, to_params(self.resolve_params(config)), extra_tags)

    # ------------------------------------------------------------------ ops

    def _record(self, trial: Trial) -> TrialRecord:
        return TrialRecord(trial.trial_id, str(trial), [], run_name=self._run_name(trial))

    def _run_name(self, trial: Trial) -> str:
        if self.labels is None:
            return ""
        try:
            return self.labels.run_name(trial.config, self.resolve_params(dict(trial.config)),
                                        trial.trial_id)
        except Exception:  # a name is not worth a failed trial
            logger.warning("no run name for trial %s", trial, exc_info=True)
            return ""

    def _submit(self, what: str, trial: Trial | None, make: Callable[[], list[dict]]) -> None:
        """Build this event's operations and hand them to the outbox; never raise unless strict."""
        try:
            for op in make():
                self.outbox.submit(op)
        except Exception:
            if self.strict:
                raise
            self.failures += 1
            logger.warning("MLflow logging failed (%s) for trial %s; the sweep continues, "
                           "Tune's own results stay in its storage", what, trial, exc_info=True)

    def _start_ops(self, trial: Trial) -> list[dict]:
        flat = self.resolve_params(dict(trial.config))
        params = [(p.key, p.value) for p in to_params(flat)]
        rec = TrialRecord(trial.trial_id, str(trial), params, str(trial.path or ""))
        ops: list[dict] = []
        if self.labels is not None:
            rec.run_name = self.labels.run_name(trial.config, flat, trial.trial_id)
            rec.tags = self.labels.trial_tags(flat, trial.trial_id)
            try:
                ops.append(inputs_op(rec, [dataset_input(flat)]))
            except Exception:  # an unreadable data dir: the run goes on without its input
                if self.strict:
                    raise
                logger.warning("trial %s: its dataset is not logged as an MLflow input", trial,
                               exc_info=True)
        self._known.add(trial.trial_id)
        self._open.add(trial.trial_id)
        return [start_op(rec), *ops]

    def _ensure_started(self, trial: Trial) -> list[dict]:
        return [] if trial.trial_id in self._open else self._start_ops(trial)

    # ------------------------------------------------------------------ Tune hooks

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Open (find or create) the child run when Tune starts the trial."""
        self._submit("start", trial, lambda: self._start_ops(trial))

    def on_trial_restore(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Re-attach to the child run when Tune restores the trial from a checkpoint.

        Ray 2.60's controller never calls this hook (a restored trial goes through
        ``on_trial_start``); kept so another Tune version that does is covered too.
        """
        self._submit("restore", trial, lambda: self._start_ops(trial))

    def on_trial_result(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        result: dict,
        **info: Any,
    ) -> None:
        """Log the trial's metrics at step = epoch (``cycle_*`` at step = cycle).

        A step already logged (an epoch re-run after a restore) keeps its first value. A
        diverged report tags the run ``sparsesweep.status=diverged``.
        """
        if result.get(DIVERGED_KEY):
            self._diverged.add(trial.trial_id)
        self._submit("result", trial,
                     lambda: [*self._ensure_started(trial), *result_ops(self._record(trial), result)])

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """A failed trial will be retried: keep the run RUNNING, record the failure count."""
        self._submit("recover", trial, lambda: [
            *self._ensure_started(trial),
            tags_op(self._record(trial), {NUM_FAILURES_TAG: trial.num_failures,
                                          ERROR_TAG: error_summary(trial.get_error())})])

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Upload the listed files of the final checkpoint, then mark the run FINISHED.

        Tune also calls this for trials stopped early (schedulers, stop criteria) and for
        PENDING trials dropped at the end; one that never started or reported gets no run.
        A diverged trial's run ends FAILED with ``sparsesweep.status=diverged``.
        """
        if trial.trial_id not in self._known and not trial.has_reported_at_least_once:
            return
        diverged = trial.trial_id in self._diverged or bool((trial.last_result or {}).get(DIVERGED_KEY))

        def ops() -> list[dict]:
            rec = self._record(trial)
            out = [*self._ensure_started(trial), *self._checkpoint_ops(trial)]
            if not diverged:  # a trial ASHA stopped is not a failure: FINISHED, status "stopped"
                stop = stop_tag(trial.last_result or {})
                out.append(tags_op(rec, {STATUS_TAG: "stopped", STOPPED_TAG: stop} if stop
                                   else {STATUS_TAG: "finished"}))
            out.append(end_op(rec, "FAILED" if diverged else "FINISHED"))
            self._open.discard(trial.trial_id)
            return out

        self._submit("complete", trial, ops)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Attach Tune's error file and what the last checkpoint holds; mark the run FAILED."""

        def ops() -> list[dict]:
            rec = self._record(trial)
            text = _error_text(trial)
            out = [*self._ensure_started(trial), error_op(rec, text, trial.num_failures),
                   tags_op(rec, {STATUS_TAG: "error", ERROR_TAG: error_summary(text)})]
            if trial.checkpoint is not None:
                out += self._checkpoint_ops(trial)
            out.append(end_op(rec, "FAILED"))
            self._open.discard(trial.trial_id)
            return out

        self._submit("error", trial, ops)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        """Between events, retry a waiting spool when its backoff has passed (cheap otherwise)."""
        box = self._box
        if box is not None and box.down:
            self._submit("retry", None, lambda: [] if box.drain() else [])  # no new operation

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Close runs of trials that never finished (time budget, stop) and report failures."""
        for trial in trials:
            if trial.trial_id in self._open:
                self._submit("end", trial, lambda t=trial: [
                    tags_op(self._record(t), {STATUS_TAG: "killed"}), end_op(self._record(t), "KILLED")])
                self._open.discard(trial.trial_id)
        if self._box is not None and self._box.spool.pending_count():
            self._box.drain_until(FINAL_DRAIN_S)
        if self.failures:
            logger.error(
                "%d MLflow logging call(s) failed during this sweep; see the warnings above. "
                "Tune's results in its storage_path are complete.",
                self.failures,
            )

    # ------------------------------------------------------------------ internals

    def _checkpoint_ops(self, trial: Trial) -> list[dict]:
        if not self.artifact_files:
            return []
        checkpoint = trial.checkpoint
        # A DDP trial's checkpoints belong to its inner Ray Train run; TuneReportCallback
        # forwards only their path, under this key, in the metrics.
        train_path = (trial.last_result or {}).get(TRAIN_CHECKPOINT_KEY)
        if checkpoint is None and train_path:
            checkpoint = Checkpoint(path=train_path)
        if checkpoint is None:
            logger.warning("trial %s finished without a checkpoint; no artifacts logged", trial)
            return []
        with checkpoint.as_directory() as ckpt_dir:
            files = checkpoint_files(Path(ckpt_dir), self.artifact_files, str(trial))
            kept = self.outbox.spool.keep_files(files)  # before a remote copy's temp dir goes
        # the trial drew its figure into its final checkpoint; else (a checkpoint before the
        # last epoch: ASHA, a stop criterion) the driver draws it here
        return [artifacts_op(self._record(trial), kept, mask_figure=not has_mask_figure(kept))] if kept else []


def _error_text(trial: Trial) -> str:
    error_file = trial.error_file
    if error_file and Path(error_file).is_file():
        return Path(error_file).read_text(errors="replace")
    error = trial.get_error()
    return str(error) if error else ""


def iter_child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> Iterable[Any]:
    """All child runs of a sweep (paged), for reports and tests."""
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            break
