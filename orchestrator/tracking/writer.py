"""The writer that applies the sweep's MLflow operations (`orchestrator.tracking.ops`), each
idempotent: a replay after a crash (applied, offset not yet saved) changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

from orchestrator.tracking.ops import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    Op,
    chunks,
    log_params,
)
from orchestrator.tracking.tags import (
    KIND_TAG,
    NUM_FAILURES_TAG,
    PARENT_TAG,
    TRIAL_ID_TAG,
    TRIAL_NAME_TAG,
)
from trainables.mask_figure import MASK_FIGURE

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the writer


class MlflowWriter:
    """Applies operations to one sweep's runs in MLflow; idempotent, so replays are safe.

    Child runs are found by tags (parent run id + Tune trial id) before one is created, so
    a restored driver (empty cache) re-attaches to the runs it made. On attaching, it reads
    the last step of each metric the run holds: a step at or below it is never logged again.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = str(experiment_id)
        self.parent_run_id = parent_run_id
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._ended: set[str] = set()  # trial ids whose run this writer terminated
        # trial_id -> metric key -> last step in the run: a trial restored from a checkpoint
        # older than its last report re-runs epochs whose metrics are already logged.
        self._last_step: dict[str, dict[str, int]] = {}
        # run id -> (name, digest) of its dataset inputs, for runs this writer created or read
        # once: a run's inputs are not read back from the store per trial
        self._inputs: dict[str, set[tuple[str, str]]] = {}
        self._created: set[str] = set()  # run ids this writer created: no metrics to read back

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ------------------------------------------------------------------ child runs

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
        params: Iterable[Param] = (),
        extra_tags: Mapping[str, str] | None = None,
        run_name: str = "",
    ) -> str:
        """Child run for a trial, looked up in the store first so ``--resume`` reuses it.

        A run found again gets the given tags and name too (a sweep logged before they
        existed, synced with ``--sync-mlflow``, is brought up to date)."""
        run_id = self.find_child_run(trial_id)
        if run_id is not None:
            run = self.client.get_run(run_id)
            log_params(self.client, run_id, params, existing=run.data.params)
            new_tags = [RunTag(k, str(v)) for k, v in (extra_tags or {}).items()
                        if run.data.tags.get(k) != str(v)]
            for batch in chunks(new_tags, MAX_PARAMS_PER_BATCH):
                self.client.log_batch(run_id, tags=list(batch), synchronous=True)
            rename = run_name and run.info.run_name != run_name
            if run.info.status != "RUNNING" or rename:
                self.client.update_run(run_id, status="RUNNING", name=run_name if rename else None)
            return run_id
        tags = {
            PARENT_TAG: self.parent_run_id,
            KIND_TAG: "trial",
            TRIAL_ID_TAG: trial_id,
            TRIAL_NAME_TAG: trial_name,
            **dict(extra_tags or {}),
        }
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=run_name or trial_name)
        log_params(self.client, run.info.run_id, params)
        self._created.add(run.info.run_id)
        self._inputs[run.info.run_id] = set()  # a new run: no inputs yet
        return run.info.run_id

    def run_for(self, trial_id: str, name: str, params: Iterable[Param] = (),
                tags: Mapping[str, str] | None = None, run_name: str = "") -> str:
        """The child run of a trial (cached), created or re-attached when first needed."""
        run_id = self._runs.get(trial_id)
        if run_id is None:
            run_id = self.find_or_create_child_run(trial_id, name, params, tags, run_name)
            self._runs[trial_id] = run_id
            self._last_step[trial_id] = {} if run_id in self._created else self.logged_steps(run_id)
        return run_id

    def logged_steps(self, run_id: str) -> dict[str, int]:
        """Last step of each metric already in the run (empty for a new run)."""
        run = self.client.get_run(run_id)
        return {
            key: max(m.step for m in self.client.get_metric_history(run_id, key))
            for key in run.data.metrics
        }

    # ------------------------------------------------------------------ apply

    def apply(self, op: Op) -> None:
        """Perform one operation (see the module doc); raises on MLflow errors."""
        kind = op["op"]
        if kind == "parent_artifact":
            self._upload(self.parent_run_id, [(op["path"], op["artifact_path"])])
            return
        if kind == "parent_end":
            self.client.set_terminated(self.parent_run_id, status=op["status"])
            return
        trial = op["trial"]
        if kind == "start":
            params = [Param(k, v) for k, v in op["params"]]
            known = trial in self._runs
            run_id = self.run_for(trial, op["name"], params, op.get("tags"), op.get("run_name", ""))
            if known:
                log_params(self.client, run_id, params, self.client.get_run(run_id).data.params)
                if trial in self._ended:  # a trial retried or resumed after it ended
                    self.client.update_run(run_id, status="RUNNING")
            self._ended.discard(trial)
            return
        run_id = self.run_for(trial, op["name"])
        if kind == "metrics":
            last = self._last_step.setdefault(trial, {})
            items = [Metric(k, float(v), int(op["ts"]), int(s)) for k, v, s in op["metrics"]
                     if int(s) > last.get(k, -1)]
            for batch in chunks(items, MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=list(batch), synchronous=True)
            for m in items:
                last[m.key] = m.step
        elif kind == "tags":
            items = [RunTag(k, v) for k, v in op["tags"].items()]
            for batch in chunks(items, MAX_PARAMS_PER_BATCH):
                self.client.log_batch(run_id, tags=list(batch), synchronous=True)
        elif kind == "artifacts":
            self._upload(run_id, op["files"])
            if op.get("mask_figure"):
                from orchestrator.tracking.labels import mask_files

                final, cycles = mask_files([(p, a) for p, a in op["files"]])
                if final is not None or cycles:
                    self._mask_figure(run_id, {"name": op["name"], "title": op["mask_figure"],
                                               "final": final, "cycles": cycles,
                                               "artifact_path": "masks"})
        elif kind == "inputs":
            self._log_inputs(run_id, op["datasets"])
        elif kind == "mask_figure":
            self._mask_figure(run_id, op)
        elif kind == "error":
            self.client.set_tag(run_id, NUM_FAILURES_TAG, str(op["num_failures"]))
            if op.get("text"):
                self.client.log_text(run_id, op["text"], "error.txt")
        elif kind == "end":
            self.client.set_terminated(run_id, status=op["status"])
            self._ended.add(trial)
        else:
            raise ValueError(f"unknown MLflow spool operation {kind!r}")

    def _log_inputs(self, run_id: str, datasets: Sequence[Mapping[str, str]]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        have = self._inputs.get(run_id)
        if have is None:
            run = self.client.get_run(run_id)
            have = {(d.dataset.name, d.dataset.digest) for d in (run.inputs.dataset_inputs if run.inputs else [])}
            self._inputs[run_id] = have
        todo = [DatasetInput(Dataset(d["name"], d["digest"], d["source_type"], d["source"],
                                     profile=d.get("profile")),
                             tags=[InputTag(MLFLOW_DATASET_CONTEXT, d["context"])] if d.get("context") else [])
                for d in datasets if (d["name"], d["digest"]) not in have]
        if todo:
            self.client.log_inputs(run_id, datasets=todo)
            have |= {(d.dataset.name, d.dataset.digest) for d in todo}

    def _mask_figure(self, run_id: str, op: Op) -> None:
        import tempfile

        from trainables.mask_figure import render_mask_figure

        final = Path(op["final"]) if op.get("final") else None
        cycles = [(int(c), Path(p)) for c, p in op.get("cycles", []) if Path(p).is_file()]
        if final is not None and not final.is_file():
            final = None
        if final is None and not cycles:
            logger.warning("MLflow mask figure of run %s: its mask files no longer exist; skipped", run_id)
            return
        with tempfile.TemporaryDirectory(prefix="sparsesweep-mask-fig-") as tmp:
            out = render_mask_figure(final, cycles, Path(tmp) / MASK_FIGURE, title=op.get("title") or op["name"])
            if out is not None:
                self.client.log_artifact(run_id, str(out), op.get("artifact_path", "masks") or None)

    def _upload(self, run_id: str, files: Iterable[Sequence[str]]) -> None:
        for path, artifact_path in files:
            src = Path(path)
            if src.is_dir():
                self.client.log_artifacts(run_id, str(src), artifact_path or None)
            elif src.is_file():
                self.client.log_artifact(run_id, str(src), artifact_path or None)
            else:
                logger.warning("MLflow upload to run %s: %s no longer exists; skipped", run_id, src)
