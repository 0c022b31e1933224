"""What the sweep driver says and keeps when something fails: the pieces `driver.run` calls.

Why a module: `sweep.py` builds and runs the Tuner; deciding where the MLflow spool lives,
how a full disk is reported, what to replay and how to count diverged trials is recovery
policy, kept here so each file does one thing.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from trainables.checkpoint_io import STORAGE_ERRNOS

STORAGE_MARKERS = ("No space left on device", "Disk quota exceeded", "Read-only file system",
                   "database or disk is full", "cannot write the checkpoint to")


def storage_error(exc: BaseException) -> OSError | None:
    """The storage OSError (full, read-only, no permission) behind `exc`, if that is what it is."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


def probe_storage(storage: str) -> OSError | None:
    """Try to write 64 KiB under a local storage: the OSError if it is full or unwritable.

    Used when something failed in a way that does not say why (Tune reading back a file it
    could not write whole, e.g. an empty error.pkl): the storage is the usual suspect.
    """
    if "://" in storage or not Path(storage).is_dir():
        return None
    probe = Path(storage) / f".sparsesweep-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e if e.errno in STORAGE_ERRNOS else None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return None


def storage_failure_message(exc: BaseException, storage: str, name: str) -> str | None:
    """One line for a sweep stopped by its storage, with the command that resumes it; else None."""
    os_error = storage_error(exc)
    text = str(exc)
    if os_error is None and not any(m in text for m in STORAGE_MARKERS):
        os_error = probe_storage(storage)
    if os_error is None and not any(m in text for m in STORAGE_MARKERS):
        return None
    why = os_error.strerror if os_error is not None else next(m for m in STORAGE_MARKERS if m in text)
    where = (os_error.filename if os_error is not None and os_error.filename else storage)
    return (f"the sweep's storage cannot be written ({why}: {where}); finished trials and "
            f"checkpoints are kept. Free space (or fix permissions), then resume with: "
            f"python -m orchestrator.sweep --storage {storage} --resume {name}")


def failed_for_storage(results: Any) -> list[str]:
    """Messages of trials that failed because their checkpoint could not be written."""
    out = []
    for r in results:
        if r.error is not None and (storage_error(r.error) is not None
                                    or any(m in str(r.error) for m in STORAGE_MARKERS)):
            out.append(str(r.error).strip().splitlines()[-1] if str(r.error).strip() else "")
    return out


def count_status(df: Any, status: str) -> int:
    return int((df["status"] == status).sum()) if len(df) and "status" in df else 0


def error_summary(text: str | BaseException | None) -> str:
    """One line naming what ended a trial: the last 'Type: message' line of a traceback."""
    if text is None:
        return ""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return type(text).__name__ if isinstance(text, BaseException) else ""
    pattern = re.compile(r"^[\w.]+(Error|Exception|Memory|Full|Checkpoint|Interrupt)\b.*:")
    line = next((ln for ln in reversed(lines) if pattern.match(ln)), lines[-1])
    if isinstance(text, BaseException) and not pattern.match(line):
        line = f"{type(text).__name__}: {line}"
    return line[:5000]
