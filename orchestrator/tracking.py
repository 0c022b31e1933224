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

Failure policy: a logging failure for one trial (a transient server error, an unreadable
checkpoint) must not kill a sweep of thousands of GPU hours, whose results Tune also keeps
in its own storage. So callbacks catch the exception, log it loudly with the traceback
(``logging`` WARNING), count it, and report the count at ERROR level at the end of the
experiment. Pass ``strict=True`` (tests do) to re-raise instead, which makes
``Tuner.fit()`` fail.

Note on ``Tuner.restore``: Tune pickles ``RunConfig`` (callbacks included) into
``tuner.pkl`` and restores that copy, so the callback must be picklable (the MLflow client
is created lazily and dropped on pickling) and a restored sweep logs to the parent run it
was created with.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from ray.train import Checkpoint
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY as TRAIN_CHECKPOINT_KEY

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)

__all__ = [
    "BOOKKEEPING_KEYS",
    "DEFAULT_ARTIFACT_FILES",
    "KIND_TAG",
    "MLflowTrialCallback",
    "PARENT_TAG",
    "SweepTracker",
    "TRIAL_ID_TAG",
    "TRIAL_NAME_TAG",
    "TRIAL_PATH_TAG",
    "artifact_root_for",
    "default_tracking_uri",
    "extract_metrics",
    "iter_child_runs",
    "metric_steps",
    "tracking_ui_command",
]

PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "sparsesweep.kind"
TRIAL_ID_TAG = "sparsesweep.trial_id"
TRIAL_NAME_TAG = "sparsesweep.trial_name"
TRIAL_PATH_TAG = "sparsesweep.trial_path"
SWEEP_NAME_TAG = "sparsesweep.sweep_name"
NUM_FAILURES_TAG = "sparsesweep.num_failures"

#: (file or directory in the last checkpoint, artifact path, required). A directory is
#: uploaded with its tree: ``artifacts/masks/cycle_01.parquet`` -> ``masks/cycle_01.parquet``.
#: Dense training has no mask, and single-cycle methods may write no cycle files.
DEFAULT_ARTIFACT_FILES: tuple[tuple[str, str, bool], ...] = (
    ("config.json", "", True),
    ("masks.parquet", "masks", False),
    ("artifacts", "", False),
)

#: Metrics whose name starts with this are logged at step = the reported ``cycle``.
CYCLE_PREFIX = "cycle_"

#: Keys Tune adds to every result; they are bookkeeping, not metrics of the method.
BOOKKEEPING_KEYS: frozenset[str] = frozenset(
    {
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "training_iteration",
        "done",
        "pid",
        "iterations_since_restore",
        "time_since_restore",
        "node_ip",
        "hostname",
        "date",
        "trial_id",
        "experiment_tag",
        "checkpoint_dir_name",
        "should_checkpoint",
        TRAIN_CHECKPOINT_KEY,
    }
)

# MLflow limits (mlflow.utils.validation): per log_batch and per value.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VALUE_LEN = 6000
MAX_KEY_LEN = 250
_VALID_KEY = re.compile(r"^[/\w.\- :]*$")
_REMOTE_SCHEMES = frozenset({"http", "https", "databricks"})
_TERMINAL = ("FINISHED", "FAILED", "KILLED")


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


# --------------------------------------------------------------------------- helpers


def _now_ms() -> int:
    return int(time.time() * 1000)


def _flatten(prefix: str, value: Any, sep: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(f"{prefix}{sep}{k}" if prefix else str(k), v, sep)
    else:
        yield prefix, value


def _valid_key(key: str) -> bool:
    return bool(key) and len(key) <= MAX_KEY_LEN and bool(_VALID_KEY.match(key))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _to_params(params: Mapping[str, Any]) -> list[Param]:
    """Flat dotted keys -> MLflow params, with MLflow's limits enforced here (warned, not raised)."""
    out: list[Param] = []
    for key, value in _flatten("", params, "."):
        if not _valid_key(key):
            logger.warning(
                "MLflow param key %r is invalid or longer than %d; skipped", key, MAX_KEY_LEN
            )
            continue
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_PARAM_VALUE_LEN:
            logger.warning(
                "MLflow param %r has %d characters; truncated to %d",
                key,
                len(text),
                MAX_PARAM_VALUE_LEN,
            )
            text = text[:MAX_PARAM_VALUE_LEN]
        out.append(Param(key, text))
    return out


def _log_params(
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, Any],
    existing: Mapping[str, str] | None = None,
) -> None:
    """Log params in batches of <=100, skipping ones already logged (MLflow forbids changing them)."""
    existing = existing or {}
    todo: list[Param] = []
    for p in _to_params(params):
        if p.key in existing:
            if existing[p.key] != p.value:
                logger.warning(
                    "run %s already has param %s=%r; keeping it (new value %r not logged)",
                    run_id,
                    p.key,
                    existing[p.key],
                    p.value,
                )
            continue
        todo.append(p)
    for batch in _chunks(todo, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=list(batch), synchronous=True)


def _is_finite_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def extract_metrics(result: Mapping[str, Any]) -> tuple[dict[str, float], int]:
    """Numeric metrics a trainable reported, and their step.

    Drops Tune's bookkeeping keys, ``config*``, bools, non-numbers and non-finite values;
    nested dicts are flattened with ``/`` (Tune's own convention). The step is the
    reported ``epoch`` when there is one (so curves line up with the paper's x axis even
    after a resume), else Tune's ``training_iteration``. See `metric_steps` for the
    per-cycle metrics, which use another step.
    """
    metrics: dict[str, float] = {}
    for top, value in result.items():
        if top in BOOKKEEPING_KEYS or top.startswith("config"):
            continue
        for key, leaf in _flatten(top, value, "/"):
            if not _is_finite_number(leaf):
                continue
            if not _valid_key(key):
                logger.warning("metric name %r is not valid for MLflow; skipped", key)
                continue
            metrics[key] = float(leaf)
    epoch = result.get("epoch")
    step_src = epoch if _is_finite_number(epoch) else result.get("training_iteration", 0)
    step = int(step_src) if _is_finite_number(step_src) else 0
    return metrics, step


def metric_steps(result: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """(key, value, step) of every metric to log: ``cycle_*`` at step = cycle, the rest at
    step = epoch. MLflow charts then show both views: per epoch, and per cycle."""
    metrics, step = extract_metrics(result)
    cycle = result.get("cycle")
    cycle_step = int(cycle) if _is_finite_number(cycle) else step
    return [(k, v, cycle_step if k.startswith(CYCLE_PREFIX) else step) for k, v in metrics.items()]


# --------------------------------------------------------------------------- parent run


class SweepTracker:
    """Parent run of one sweep; the driver owns it for the sweep's lifetime.

    Uses ``MlflowClient`` with explicit run ids, never MLflow's global active run, so it
    can live next to other MLflow users in the same process (e.g. notebooks). An existing
    experiment is reused as is, artifact location included (MLflow fixes it at creation).
    """

    def __init__(self, tracking_uri: str, experiment_name: str, storage_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.storage_dir = Path(storage_dir).expanduser().resolve()
        if _scheme(tracking_uri) == "sqlite":
            # SQLite creates the file but not its directory.
            db_path = Path(urlparse(tracking_uri).path)
            db_path.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._get_or_create_experiment()
        self._run_id: str | None = None

    @property
    def run_id(self) -> str:
        """Parent run id; only valid after :meth:`start`."""
        if self._run_id is None:
            raise RuntimeError("SweepTracker.start() has not been called")
        return self._run_id

    def _get_or_create_experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            try:
                return self.client.create_experiment(
                    self.experiment_name,
                    artifact_location=artifact_root_for(self.tracking_uri, self.storage_dir),
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
    ) -> str:
        """Create the parent run, or re-open ``resume_run_id`` for ``--resume``; return its id."""
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
            self.client.update_run(resume_run_id, status="RUNNING")
            _log_params(self.client, resume_run_id, params, existing=run.data.params)
            self._set_tags(resume_run_id, all_tags)
            self._run_id = resume_run_id
            return resume_run_id
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=sweep_name)
        self._run_id = run.info.run_id
        _log_params(self.client, self._run_id, params)
        return self._run_id

    def _set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        items = [RunTag(k, v) for k, v in tags.items()]
        for batch in _chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=list(batch), synchronous=True)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the parent run terminated (FINISHED, FAILED or KILLED)."""
        if status not in _TERMINAL:
            raise ValueError(f"status must be one of {_TERMINAL}, got {status!r}")
        self.client.set_terminated(self.run_id, status=status)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Attach a file (sweep spec, report, figure) to the parent run."""
        self.client.log_artifact(self.run_id, str(local_path), artifact_path or None)


# --------------------------------------------------------------------------- child runs


class MLflowTrialCallback(Callback):
    """Tune callback (runs in the driver) that mirrors each trial into a child MLflow run."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        resolve_params: Callable[[dict], dict[str, Any]],
        artifact_files: Sequence[tuple[str, str, bool]] = DEFAULT_ARTIFACT_FILES,
        *,
        strict: bool = False,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = str(experiment_id)
        self.parent_run_id = parent_run_id
        self.resolve_params = resolve_params
        self.artifact_files = tuple((str(f), str(p), bool(r)) for f, p, r in artifact_files)
        self.strict = strict
        self.failures = 0
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._open: set[str] = set()  # trial ids whose run we set RUNNING
        # trial_id -> metric key -> last step logged: a trial restored from a checkpoint older
        # than its last report re-runs epochs whose metrics are already in its run.
        self._last_step: dict[str, dict[str, int]] = {}

    # Tune pickles RunConfig (tuner.pkl); a live client/cache must not travel with it.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_runs"] = {}
        state["_open"] = set()
        state["_last_step"] = {}
        state["failures"] = 0
        return state

    @property
    def client(self) -> MlflowClient:
        """Lazily created so the callback stays picklable."""
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ------------------------------------------------------------------ find-or-create

    def find_child_run(self, trial_id: str) -> str | None:
        """Run id of this sweep's child run for ``trial_id`` in the store, if any."""
        if "'" in trial_id:
            raise ValueError(f"unexpected quote in trial id {trial_id!r}")
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' "
                f"and tags.`{TRIAL_ID_TAG}` = '{trial_id}'"
            ),
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=10,
            order_by=["attributes.start_time ASC"],
        )
        if not runs:
            return None
        if len(runs) > 1:
            logger.warning(
                "%d MLflow runs for trial %s under parent %s; using the oldest %s",
                len(runs),
                trial_id,
                self.parent_run_id,
                runs[0].info.run_id,
            )
        return runs[0].info.run_id

    def find_or_create_child_run(
        self,
        trial_id: str,
        trial_name: str,
        config: dict,
        extra_tags: Mapping[str, str] | None = None,
    ) -> str:
        """Child run for a trial, looked up in the store first so ``--resume`` reuses it.

        Always queries the store (no in-memory shortcut): a restored driver starts with an
        empty cache. Safe without a lock because only the driver writes.
        """
        params = self.resolve_params(config)
        run_id = self.find_child_run(trial_id)
        if run_id is not None:
            run = self.client.get_run(run_id)
            _log_params(self.client, run_id, params, existing=run.data.params)
            if run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {
            PARENT_TAG: self.parent_run_id,
            KIND_TAG: "trial",
            TRIAL_ID_TAG: trial_id,
            TRIAL_NAME_TAG: trial_name,
            **dict(extra_tags or {}),
        }
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=trial_name)
        _log_params(self.client, run.info.run_id, params)
        return run.info.run_id

    def _run_for(self, trial: Trial) -> str:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            extra = {TRIAL_PATH_TAG: str(trial.path)} if trial.path else None
            run_id = self.find_or_create_child_run(
                trial.trial_id, str(trial), dict(trial.config), extra_tags=extra
            )
            self._runs[trial.trial_id] = run_id
            self._last_step[trial.trial_id] = self._logged_steps(run_id)
        self._open.add(trial.trial_id)
        return run_id

    def _logged_steps(self, run_id: str) -> dict[str, int]:
        """Last step of each metric already in the run (empty for a new run)."""
        run = self.client.get_run(run_id)
        return {
            key: max(m.step for m in self.client.get_metric_history(run_id, key))
            for key in run.data.metrics
        }

    def _guard(self, what: str, trial: Trial | None, fn: Callable[[], None]) -> None:
        """Run one logging action; on failure warn loudly (or raise when strict)."""
        try:
            fn()
        except Exception:
            if self.strict:
                raise
            self.failures += 1
            logger.warning(
                "MLflow logging failed (%s) for trial %s; the sweep continues, Tune's own "
                "results stay in its storage",
                what,
                trial,
                exc_info=True,
            )

    # ------------------------------------------------------------------ Tune hooks

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Open (find or create) the child run when Tune starts the trial."""
        self._guard("start", trial, lambda: self._start(trial))

    def on_trial_restore(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Re-attach to the child run when Tune restores the trial from a checkpoint.

        Ray 2.60's controller never calls this hook (a restored trial goes through
        ``on_trial_start``); kept so another Tune version that does is covered too.
        """
        self._guard("restore", trial, lambda: self._start(trial))

    def _start(self, trial: Trial) -> None:
        run_id = self._runs.get(trial.trial_id)
        if run_id is not None and trial.trial_id not in self._open:
            # Known run that was terminated (e.g. a recovered trial): re-open it.
            self.client.update_run(run_id, status="RUNNING")
        self._run_for(trial)

    def on_trial_result(
        self,
        iteration: int,
        trials: list[Trial],
        trial: Trial,
        result: dict,
        **info: Any,
    ) -> None:
        """Log the trial's numeric metrics at step = epoch (or training_iteration)."""
        self._guard("result", trial, lambda: self._log_result(trial, result))

    def _log_result(self, trial: Trial, result: Mapping[str, Any]) -> None:
        """Log each metric at its step, once: a step already logged is not logged again.

        A trial restored from a checkpoint re-runs the epochs after it; those already in
        the run (reported before an interrupt) keep their first value, so every step holds
        one value (on CPU the re-run is bit-identical anyway).
        """
        entries = metric_steps(result)
        if not entries:
            return
        run_id = self._run_for(trial)
        last = self._last_step.setdefault(trial.trial_id, {})
        ts = _now_ms()
        items = [Metric(k, v, ts, step) for k, v, step in entries if step > last.get(k, -1)]
        for batch in _chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=list(batch), synchronous=True)
        for m in items:
            last[m.key] = m.step

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """A failed trial will be retried: keep the run RUNNING, record the failure count."""
        self._guard(
            "recover",
            trial,
            lambda: self.client.set_tag(
                self._run_for(trial), NUM_FAILURES_TAG, str(trial.num_failures)
            ),
        )

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Upload the listed files of the final checkpoint, then mark the run FINISHED.

        Tune also calls this for trials stopped early (schedulers, stop criteria) and for
        PENDING trials dropped at the end; one that never started or reported gets no run.
        """
        if trial.trial_id not in self._runs and not trial.has_reported_at_least_once:
            return
        self._guard("artifacts", trial, lambda: self._log_checkpoint_files(trial))
        self._guard("complete", trial, lambda: self._terminate(trial, "FINISHED"))

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Attach Tune's error file and what the last checkpoint holds; mark the run FAILED."""
        self._guard("error file", trial, lambda: self._log_error(trial))
        if trial.checkpoint is not None:
            self._guard("artifacts", trial, lambda: self._log_checkpoint_files(trial))
        self._guard("error", trial, lambda: self._terminate(trial, "FAILED"))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Close runs of trials that never finished (time budget, stop) and report failures."""
        for trial in trials:
            if trial.trial_id in self._open:
                self._guard("end", trial, lambda t=trial: self._terminate(t, "KILLED"))
        if self.failures:
            logger.error(
                "%d MLflow logging call(s) failed during this sweep; see the warnings above. "
                "Tune's results in its storage_path are complete.",
                self.failures,
            )

    # ------------------------------------------------------------------ internals

    def _terminate(self, trial: Trial, status: str) -> None:
        run_id = self._run_for(trial)
        self.client.set_terminated(run_id, status=status)
        self._open.discard(trial.trial_id)

    def _log_checkpoint_files(self, trial: Trial) -> None:
        if not self.artifact_files:
            return
        checkpoint = trial.checkpoint
        # A DDP trial's checkpoints belong to its inner Ray Train run; TuneReportCallback
        # forwards only their path, under this key, in the metrics.
        train_path = (trial.last_result or {}).get(TRAIN_CHECKPOINT_KEY)
        if checkpoint is None and train_path:
            checkpoint = Checkpoint(path=train_path)
        if checkpoint is None:
            logger.warning("trial %s finished without a checkpoint; no artifacts logged", trial)
            return
        run_id = self._run_for(trial)
        with checkpoint.as_directory() as ckpt_dir:
            for filename, artifact_path, required in self.artifact_files:
                src = Path(ckpt_dir) / filename
                if src.is_dir():
                    self.client.log_artifacts(run_id, str(src), artifact_path or None)
                elif src.is_file():
                    self.client.log_artifact(run_id, str(src), artifact_path or None)
                elif required:
                    logger.warning(
                        "trial %s: %s not in its last checkpoint %s; not logged",
                        trial,
                        filename,
                        checkpoint.path,
                    )

    def _log_error(self, trial: Trial) -> None:
        run_id = self._run_for(trial)
        self.client.set_tag(run_id, NUM_FAILURES_TAG, str(trial.num_failures))
        error_file = trial.error_file
        if error_file and Path(error_file).is_file():
            self.client.log_artifact(run_id, error_file)
            return
        text = trial.get_error()
        if text:
            self.client.log_text(run_id, str(text), "error.txt")


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
