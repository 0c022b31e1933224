"""The Tune callback that turns every trial event into MLflow operations: one child run per
trial, found again by its tags on resume, so `Tuner.restore` never duplicates a run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities import ViewType
from ray.train import Checkpoint
from ray.tune import Callback

from orchestrator.recovery import error_summary
from orchestrator.tracking.labels import SweepLabels, dataset_input, trial_note
from orchestrator.tracking.ops import (
    DEFAULT_ARTIFACT_FILES,
    TRAIN_CHECKPOINT_KEY,
    TrialRecord,
    artifacts_op,
    checkpoint_files,
    end_op,
    error_op,
    has_mask_figure,
    inputs_op,
    result_ops,
    start_op,
    tags_op,
    to_params,
)
from orchestrator.tracking.outbox import FINAL_DRAIN_S, MlflowOutbox, open_outbox
from orchestrator.tracking.tags import (
    ERROR_TAG,
    NOTE_TAG,
    NUM_FAILURES_TAG,
    PARENT_TAG,
    STATUS_TAG,
    STOPPED_TAG,
)
from orchestrator.tracking.writer import MlflowWriter
from orchestrator.tuner.schedulers import stop_tag
from trainables.keys import DIVERGED_KEY

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- child runs


class MLflowTrialCallback(Callback):
    """Tune callback (runs in the driver) that mirrors each trial into a child MLflow run.

    Each hook turns the event into operations (`orchestrator.tracking.ops`) and hands them to
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
            rec.tags = self.labels.trial_tags(flat, trial.trial_id, trial.config)
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
                note = {NOTE_TAG: trial_note(self.resolve_params(dict(trial.config)), trial.last_result)}
                out.append(tags_op(rec, {STATUS_TAG: "stopped", STOPPED_TAG: stop, **note} if stop
                                   else {STATUS_TAG: "finished", **note}))
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
