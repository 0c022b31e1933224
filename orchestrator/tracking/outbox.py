"""The outbox of a sweep's MLflow writes: operations spooled first, then applied by the
writer, with backoff while the server does not answer (one per spool and parent run, shared
by the parent tracker and the Tune callback so their writes keep one order)."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.tracking.ops import is_permanent
from orchestrator.tracking.spool import Outbox, Spool
from orchestrator.tracking.uris import fail_fast_http, http_health
from orchestrator.tracking.writer import MlflowWriter

# How long the end of a sweep keeps retrying MLflow before leaving the rest to --sync-mlflow.
FINAL_DRAIN_S = float(os.environ.get("SPARSESWEEP_MLFLOW_FINAL_WAIT_S", "20"))
# Longest wait between two attempts while MLflow does not answer (each is one /health probe).
MAX_BACKOFF_S = float(os.environ.get("SPARSESWEEP_MLFLOW_MAX_BACKOFF_S", "60"))


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
