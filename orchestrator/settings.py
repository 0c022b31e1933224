"""A sweep's settings and the one owner of every path a sweep writes.

`Settings` is what defines a sweep beyond its search space; it is saved in the sweep's folder
so that `--resume` needs nothing else. `SweepLayout` names every file and folder of a sweep
(open_lth's `paths.py` is the model): code elsewhere asks the layout, never joins names itself.

    STORAGE/                      --storage (a local folder or a URI such as s3://bucket/runs)
      mlflow.db  mlartifacts/     the default MLflow store (local storage only)
      tune/NAME/                  Tune's experiment folder = the sweep folder
        sparsesweep.json          the Settings (--resume reads them)
        space.yaml | space.toml   the copy of a --space file (--resume reads it, not the original)
        mlflow-spool.jsonl ...    MLflow writes waiting out an outage
        optuna.db                 the Optuna study (default storage of --search optuna)
        ddp/                      the DDP trials' Ray Train storage
        report/                   the report (index.html, figures, CSVs)
        results.csv ...           the results tables
        .sparsesweep-tune-state/  a copy of Tune's last readable state
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "sparsesweep.json"
TUNE_DIR = "tune"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
STUDY_FILE = "optuna.db"
SPACE_COPY = "space"  # + the --space file's suffix
DDP_DIR = "ddp"
REPORT_DIR = "report"
TUNE_STATE_BACKUP = ".sparsesweep-tune-state"
# the sweep's result files, in the order the driver writes them (logged to the parent run)
RESULT_FILES = ("results.csv", "results.parquet", "cycles.csv", "cycles_summary.csv")


@dataclass
class Settings:
    """What defines a sweep beyond its space; saved beside it so `--resume` needs nothing else."""

    space: str = ""
    space_file: str = ""  # a --space file: the sweep folder's copy once the sweep started
    plugins: list[str] = field(default_factory=list)  # --plugin modules, imported again on --resume
    search: str = "grid"
    sets: dict[str, str] = field(default_factory=dict)
    grids: dict[str, list[str]] = field(default_factory=dict)
    num_samples: int | None = None
    max_concurrent: int = 2
    max_failures: int = 0
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | str | None = None  # a share, "auto" (cluster.packing) or None
    metric: str | None = None
    mode: str | None = None
    optuna_seed: int = 0
    name: str = ""
    storage: str = ""
    tracking_uri: str = ""
    experiment: str = ""
    parent_run_id: str | None = None
    scheduler: str = "fifo"  # or "asha" (tuner.schedulers)
    grace_period: int | None = None
    reduction_factor: float | None = None
    sampler: str = "tpe"  # tuner.study.SAMPLERS
    optuna_storage: str = ""  # RDB URL of the Optuna study ("": SQLite in the sweep's folder)
    study: str = ""  # Optuna study joined by several drivers ("": the sweep's own, its name)
    reuse_actors: bool = True  # no flag: benchmarks/orchestration_overhead.py compares both
    command: str = ""  # the command line that started the sweep (credentials redacted)
    variants: list[str] = field(default_factory=list)  # --variants: the space's named variants run (all: [])

    @property
    def layout(self) -> SweepLayout:
        return SweepLayout(self.storage, self.name)


def is_uri(path: str) -> bool:
    return "://" in path


def storage_root(storage: str) -> str:
    """--storage as the sweep keeps it: a URI unchanged, a folder absolute."""
    return storage if is_uri(storage) else str(Path(storage).expanduser().resolve())


def tune_root(storage: str) -> str:
    """Tune's storage_path: every sweep of a storage is a folder in it."""
    return f"{storage.rstrip('/')}/{TUNE_DIR}" if is_uri(storage) else str(Path(storage) / TUNE_DIR)


def default_tracking_uri(storage: str | Path) -> str:
    """SQLite store inside the sweep's storage dir: zero setup, one file to copy around."""
    return f"sqlite:///{Path(storage).expanduser().resolve()}/{MLFLOW_DB}"


def local_artifact_root(storage: str | Path) -> str:
    """Where a local/DB MLflow store keeps artifacts: next to the database."""
    return (Path(storage).expanduser().resolve() / MLFLOW_ARTIFACTS).as_uri()


@dataclass(frozen=True)
class SweepLayout:
    """Every path of one sweep (`storage` as `storage_root` gives it, `name` the sweep's)."""

    storage: str
    name: str

    @property
    def remote(self) -> bool:
        """Storage on a URI (s3://, gs://): Tune writes there, the driver keeps no local folder."""
        return is_uri(self.storage)

    @property
    def tune_root(self) -> str:
        return tune_root(self.storage)

    @property
    def sweep_path(self) -> str:
        """The sweep folder as Tune names it (a URI for remote storage)."""
        return f"{self.tune_root}/{self.name}"

    @property
    def sweep_dir(self) -> Path:
        """The local sweep folder (local storage only)."""
        return Path(self.tune_root) / self.name

    @property
    def local_dir(self) -> Path | None:
        """The sweep folder where the driver writes tables and the report; None when remote."""
        return None if self.remote else self.sweep_dir

    @property
    def state_file(self) -> Path:
        return self.sweep_dir / STATE_FILE

    @property
    def spool_dir(self) -> Path:
        """The MLflow spool: the sweep folder when local, else a driver-local folder."""
        if self.remote:
            return Path.home() / ".sparsesweep" / "spool" / self.name
        return self.sweep_dir

    @property
    def report_dir(self) -> Path | None:
        return None if self.remote else self.sweep_dir / REPORT_DIR

    @property
    def ddp_storage(self) -> str:
        return f"{self.sweep_path}/{DDP_DIR}"

    def default_study_url(self) -> str:
        """The Optuna study's default RDB: SQLite in the sweep folder ("" when remote)."""
        return "" if self.remote else f"sqlite:///{self.sweep_dir.resolve() / STUDY_FILE}"

    def space_copy(self, suffix: str) -> Path:
        """Where a --space file is copied (and logged from), so --resume reads what ran."""
        return self.sweep_dir / f"{SPACE_COPY}{suffix}"

    def write_settings(self, settings: Settings) -> None:
        """Save the settings atomically (a resume must never read half a file)."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.sweep_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(settings), indent=2))
        os.replace(tmp, self.state_file)

    def read_settings(self) -> Settings:
        settings = Settings(**json.loads(self.state_file.read_text()))
        settings.storage = self.storage
        return settings

    @staticmethod
    def saved_sweeps(storage: str) -> list[SweepLayout]:
        """The sweeps saved under a local storage, oldest first (by their settings' mtime)."""
        found = sorted(Path(tune_root(storage)).glob(f"*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime)
        return [SweepLayout(storage, p.parent.name) for p in found]
