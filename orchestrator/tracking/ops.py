"""The MLflow writes of a sweep as plain operations, and the writer that applies them.

Why operations: the driver never calls MLflow for a trial directly. A Tune event (a result,
a finished or failed trial) becomes a small JSON-able dict, which goes through the durable
spool (`orchestrator.tracking.spool`) and is then applied here. The same operations are rebuilt from
Tune's own files by `python -m orchestrator.sweep --resume NAME --sync-mlflow`
(`orchestrator.tracking.sync`). So a live sweep, a sweep whose server was down for hours, and a late
sync all go through one code path.

Every operation is idempotent: a metric step already in the run is not logged again (the
first value is kept), params already logged are skipped, tags and statuses are overwritten
with the same value, an upload replaces the same artifact path. That is what makes a replay
after a crash (applied, offset not yet saved) harmless.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY as TRAIN_CHECKPOINT_KEY

from orchestrator.tracking.labels import param_text
from orchestrator.tracking.tags import (
    DIVERGED_AT_TAG,
    STATUS_TAG,
    TRIAL_PATH_TAG,
)
from trainables.keys import CYCLE_PREFIX, CYCLE_STEP_KEY, DIVERGED_KEY, POSITION_KEYS, REPLAYED_KEY
from trainables.mask_figure import MASK_FIGURE

logger = logging.getLogger(__name__)

Op = dict[str, Any]


#: (file or directory in the last checkpoint, artifact path, required). A directory is
#: uploaded with its tree: ``artifacts/masks/cycle_01.parquet`` -> ``masks/cycle_01.parquet``.
#: Dense training has no mask, and single-cycle methods may write no cycle files. The mask
#: figure is drawn by the trial into its final checkpoint (`trainables.tune`).
DEFAULT_ARTIFACT_FILES: tuple[tuple[str, str, bool], ...] = (
    ("config.json", "", True),
    ("masks.parquet", "masks", False),
    (MASK_FIGURE, "masks", False),
    ("artifacts", "", False),
)


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
        DIVERGED_KEY,  # a diverged trial's report key: shown as a tag, not a metric
        REPLAYED_KEY,
    }
)

# MLflow limits (mlflow.utils.validation): per log_batch and per value.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VALUE_LEN = 6000
MAX_TAG_VALUE_LEN = 5000  # (recovery.error_summary cuts there too)
MAX_KEY_LEN = 250
_VALID_KEY = re.compile(r"^[/\w.\- :]*$")
TERMINAL = ("FINISHED", "FAILED", "KILLED")

# MLflow error codes that no retry can fix: the entry is skipped (with a warning).
PERMANENT_ERRORS = frozenset(
    {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_STATE"}
)


# --------------------------------------------------------------------------- helpers


def now_ms() -> int:
    return int(time.time() * 1000)


def _flatten(prefix: str, value: Any, sep: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(f"{prefix}{sep}{k}" if prefix else str(k), v, sep)
    else:
        yield prefix, value


def _valid_key(key: str) -> bool:
    return bool(key) and len(key) <= MAX_KEY_LEN and bool(_VALID_KEY.match(key))


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def to_params(params: Mapping[str, Any]) -> list[Param]:
    """Flat dotted keys -> MLflow params, with MLflow's limits enforced here (warned, not raised)."""
    out: list[Param] = []
    for key, value in _flatten("", params, "."):
        if not _valid_key(key):
            logger.warning(
                "MLflow param key %r is invalid or longer than %d; skipped", key, MAX_KEY_LEN
            )
            continue
        text = param_text(value)
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


def log_params(
    client: MlflowClient,
    run_id: str,
    params: Iterable[Param],
    existing: Mapping[str, str] | None = None,
) -> None:
    """Log params in batches of <=100, skipping ones already logged (MLflow forbids changing them)."""
    existing = existing or {}
    todo: list[Param] = []
    for p in params:
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
    for batch in chunks(todo, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=list(batch), synchronous=True)


def _is_finite_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def extract_metrics(result: Mapping[str, Any]) -> tuple[dict[str, float], int]:
    """Numeric metrics a trainable reported, and their step.

    Drops Tune's bookkeeping keys, the position (``epoch``, ``step``), ``config*``, bools, non-numbers and non-finite values;
    nested dicts are flattened with ``/`` (Tune's own convention). The step is the
    reported ``epoch`` when there is one (so curves line up with the paper's x axis even
    after a resume), else Tune's ``training_iteration``. See `metric_steps` for the
    per-cycle metrics, which use another step.
    """
    metrics: dict[str, float] = {}
    for top, value in result.items():
        if top in BOOKKEEPING_KEYS or top in POSITION_KEYS or top.startswith("config"):
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
    """(key, value, step) of every metric to log: ``cycle/*`` at step = the cycle (IMP: the
    round) the report's ``cycle_step`` names, the rest at step = epoch. MLflow charts then show
    both views: per epoch, and per cycle."""
    metrics, step = extract_metrics(result)
    cycle = result.get(CYCLE_STEP_KEY, result.get("cycle"))
    cycle_step = int(cycle) if _is_finite_number(cycle) else step
    return [(k, v, cycle_step if k.startswith(CYCLE_PREFIX) else step) for k, v in metrics.items()]


def is_permanent(exc: BaseException) -> bool:
    """True for a failure no retry can fix (MLflow refused the request); False for outages."""
    if isinstance(exc, MlflowException):
        return exc.error_code in PERMANENT_ERRORS
    return isinstance(exc, (ValueError, TypeError, KeyError))


# --------------------------------------------------------------------------- operations


@dataclass
class TrialRecord:
    """What the writer needs to know about a trial, from a live Tune Trial or Tune's files."""

    trial_id: str
    name: str
    params: list[tuple[str, str]]
    path: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    run_name: str = ""  # the MLflow run's name (orchestrator.tracking.labels); "" keeps `name`


def start_op(rec: TrialRecord) -> Op:
    """Find or create the trial's child run (params, tags) and mark it RUNNING."""
    op: Op = {"op": "start", "trial": rec.trial_id, "name": rec.name, "params": rec.params,
              "tags": ({TRIAL_PATH_TAG: rec.path} if rec.path else {}) | rec.tags}
    if rec.run_name:
        op["run_name"] = rec.run_name
    return op


def result_ops(rec: TrialRecord, result: Mapping[str, Any]) -> list[Op]:
    """The metrics of one report (each at its step); a diverged report also tags the run."""
    ops: list[Op] = []
    entries = metric_steps(result)
    if entries:
        ops.append({"op": "metrics", "trial": rec.trial_id, "name": rec.name, "ts": now_ms(),
                    "metrics": [[k, v, s] for k, v, s in entries]})
    if result.get(DIVERGED_KEY):
        where = f"epoch {result.get('epoch')}, step {result.get('step')}"
        ops.append(tags_op(rec, {STATUS_TAG: "diverged", DIVERGED_AT_TAG: where}))
    return ops


def tags_op(rec: TrialRecord, tags: Mapping[str, Any]) -> Op:
    return {"op": "tags", "trial": rec.trial_id, "name": rec.name,
            "tags": {str(k): str(v)[:MAX_TAG_VALUE_LEN] for k, v in tags.items()}}


def artifacts_op(rec: TrialRecord, files: Sequence[tuple[str, str]], *,
                 mask_figure: bool = False) -> Op:
    """Upload files or directories (already kept by the spool) under their artifact paths.

    With `mask_figure`, the masks among them are then drawn (`orchestrator.tracking.labels`) into
    ``masks/density.png``, in the same operation: the spool drops its kept files once every
    entry is applied, so a later entry could not read them any more. Not needed when the
    files hold the figure the trial drew (`has_mask_figure`)."""
    op: Op = {"op": "artifacts", "trial": rec.trial_id, "name": rec.name,
              "files": [[str(p), a] for p, a in files]}
    if mask_figure:
        op["mask_figure"] = rec.run_name or rec.name
    return op


def has_mask_figure(files: Sequence[tuple[str | Path, str]]) -> bool:
    """True when the files to upload hold the trial's own mask figure (``masks/density.png``)."""
    return any(Path(p).name == MASK_FIGURE and a == "masks" for p, a in files)


def inputs_op(rec: TrialRecord, datasets: Sequence[Mapping[str, str]]) -> Op:
    """Log datasets (`orchestrator.tracking.labels.dataset_input`) as the run's inputs; one already
    there (same name and digest) is not logged again."""
    return {"op": "inputs", "trial": rec.trial_id, "name": rec.name,
            "datasets": [dict(d) for d in datasets]}


def mask_figure_op(rec: TrialRecord, final: str | None, cycles: Sequence[tuple[int, str]],
                   artifact_path: str = "masks") -> Op | None:
    """Draw the mask summary PNG (`trainables.mask_figure.render_mask_figure`) from mask files
    that stay where they are (Tune's checkpoints: `--sync-mlflow`) and upload it next to them;
    a re-upload replaces it. Live sweeps draw it in their `artifacts_op` instead."""
    if final is None and not cycles:
        return None
    return {"op": "mask_figure", "trial": rec.trial_id, "name": rec.name, "final": final,
            "cycles": [[int(c), str(p)] for c, p in cycles], "artifact_path": artifact_path,
            "title": rec.run_name or rec.name}


def error_op(rec: TrialRecord, text: str, num_failures: int) -> Op:
    return {"op": "error", "trial": rec.trial_id, "name": rec.name, "text": text,
            "num_failures": int(num_failures)}


def end_op(rec: TrialRecord, status: str) -> Op:
    if status not in TERMINAL:
        raise ValueError(f"status must be one of {TERMINAL}, got {status!r}")
    return {"op": "end", "trial": rec.trial_id, "name": rec.name, "status": status}


def parent_artifact_op(path: str, artifact_path: str = "") -> Op:
    return {"op": "parent_artifact", "path": str(path), "artifact_path": artifact_path}


def parent_end_op(status: str) -> Op:
    if status not in TERMINAL:
        raise ValueError(f"status must be one of {TERMINAL}, got {status!r}")
    return {"op": "parent_end", "status": status}


def checkpoint_files(ckpt_dir: Path, artifact_files: Sequence[tuple[str, str, bool]],
                     trial: str) -> list[tuple[Path, str]]:
    """(source, artifact path) of the listed files present in a checkpoint directory."""
    out: list[tuple[Path, str]] = []
    for filename, artifact_path, required in artifact_files:
        src = Path(ckpt_dir) / filename
        if src.exists():
            out.append((src, artifact_path))
        elif required:
            logger.warning("trial %s: %s not in its last checkpoint %s; not logged", trial,
                           filename, ckpt_dir)
    return out
