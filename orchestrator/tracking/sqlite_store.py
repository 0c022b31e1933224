"""A new SQLite tracking store, started from a cached copy of an empty migrated one.

Why: MLflow migrates a new SQLite store's schema on first use, 2-7 s of CPU on the machines
this was measured on, paid again by every new `--storage` (and competing with Ray's start on
a laptop's cores). The empty store is made once per MLflow version, by MLflow itself, under
`$XDG_CACHE_HOME/sparsesweep/` (default `~/.cache/sparsesweep/`), and copied. An existing store
is never touched, and any failure (an unwritable cache) leaves the creation to MLflow.

The copy's Default experiment (id 0, which sparsesweep does not use) keeps the artifact
location MLflow gave it when the cached store was made.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparsesweep"


def empty_store(version: str | None = None) -> Path:
    """The cached empty store for this MLflow version, made (migrated by MLflow) when missing."""
    import mlflow
    from mlflow import MlflowClient

    path = cache_dir() / f"mlflow-{version or mlflow.__version__}-empty.db"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments()  # creates and migrates
            os.replace(tmp, path)  # two makers at once: the last complete copy wins
        finally:
            tmp.unlink(missing_ok=True)
    return path


def seed_sqlite_store(db_path: Path) -> bool:
    """Copy the cached empty store to `db_path` when no store is there; True when copied."""
    if db_path.exists():
        return False
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(empty_store(), tmp)
        os.link(tmp, db_path)  # atomic, and never over a store another sweep created meanwhile
        return True
    except FileExistsError:
        return False
    except Exception as e:  # noqa: BLE001 - MLflow creates the store as it always did
        logger.debug("no cached MLflow store for %s: %s", db_path, e)
        return False
    finally:
        tmp.unlink(missing_ok=True)
