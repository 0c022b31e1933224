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
every write is an operation (`orchestrator.tracking.ops`) appended first to a durable spool
in the sweep's directory (`orchestrator.tracking.spool`), then applied. While MLflow does not answer,
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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from orchestrator.tracking.ops import (
    MAX_PARAMS_PER_BATCH,
    TERMINAL,
    chunks,
    log_params,
    parent_artifact_op,
    parent_end_op,
    to_params,
)
from orchestrator.tracking.outbox import FINAL_DRAIN_S, MlflowOutbox, open_outbox
from orchestrator.tracking.sqlite_store import seed_sqlite_store
from orchestrator.tracking.tags import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    KIND_TAG,
    NOTE_TAG,
    SWEEP_NAME_TAG,
)
from orchestrator.tracking.uris import (
    artifact_root_for,
    fail_fast_http,
    scheme,
)

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

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
        if scheme(tracking_uri) == "sqlite":
            # SQLite creates the file but not its directory.
            db_path = Path(urlparse(tracking_uri).path)
            db_path.parent.mkdir(parents=True, exist_ok=True)
            seed_sqlite_store(db_path)  # no schema migration for a new store (orchestrator.tracking.sqlite_store)
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
