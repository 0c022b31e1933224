"""The Optuna study of a `--search optuna` sweep: its sampler and its RDB storage.

Why an RDB: the study outlives the driver. It is stored next to the sweep
(`tune/<sweep>/optuna.db`, SQLite) or in the database `--optuna-storage` names (the
cluster's PostgreSQL/MySQL), under the sweep's name. `--resume` opens the same study:
Tune restores its searcher, whose study reads the finished trials back from the storage,
so the sampler conditions on them and `num_samples` counts them; nothing is re-sampled.
The same file can be opened by `optuna-dashboard` or `optuna.load_study` while or after
the sweep runs.

Samplers (`--sampler`), all seeded by `--optuna-seed`:
- `tpe` (default): Optuna 5's TPE, multivariate with constant liar, for concurrent trials;
- `gp`: Gaussian-process Bayesian optimisation (`GPSampler`), for a few expensive trials;
- `random`: a baseline, and what the others' start-up trials draw;
- `cmaes`: CMA-ES over the float and integer axes (categorical axes are drawn at random:
  Optuna warns once per axis).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.config import ConfigError

if TYPE_CHECKING:
    from search_spaces import Plan

SAMPLERS: tuple[str, ...] = ("tpe", "gp", "random", "cmaes")
_STORAGE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+")


def check_sampler(name: str) -> str:
    if name not in SAMPLERS:
        raise ConfigError(f"--sampler: {name!r} is not one of {', '.join(SAMPLERS)}")
    return name


def check_storage_url(url: str) -> str:
    """An RDB URL SQLAlchemy can open here: sqlite:///PATH (its folder creatable),
    postgresql://..., mysql://... with the driver installed."""
    from orchestrator.checks import check_db_url, one_line

    if not url.startswith(_STORAGE_SCHEMES):
        raise ConfigError(f"--optuna-storage: {one_line(repr(url))} is not an RDB URL; use sqlite:///PATH, "
                          f"postgresql://USER@HOST/DB or mysql://USER@HOST/DB")
    check_db_url("--optuna-storage", url)
    return url


def make_sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise ConfigError(f"--sampler: {name!r} is not one of {', '.join(SAMPLERS)}")


def make_storage(url: str) -> Any:
    """Optuna's RDB storage (Ray's OptunaSearch wants the object, not the URL).

    `heartbeat_interval` is left off: Tune, not Optuna, tells which trials died."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def make_searcher(plan: Plan, *, sampler: str, seed: int, storage_url: str, study_name: str,
                  metric: str, mode: str) -> Any:
    """Ray Tune's OptunaSearch over the plan's Optuna space, with its study in the RDB."""
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(space=dict(plan.optuna_space), metric=metric, mode=mode,
                        sampler=make_sampler(sampler, seed),
                        storage=make_storage(storage_url) if storage_url else None,
                        study_name=study_name)


def load_study(storage_url: str, study_name: str) -> Any:
    """The stored study, read back (tests, reports), never writing to its database.

    Optuna's storage stamps the schema (version row, alembic revision) when it finds it
    unstamped: a reader polling a study the sweep is still creating would stamp it too, and
    the sweep then dies on the duplicate alembic row (seen in CI). So a SQLite database is
    read only once the sweep has stamped it; `LookupError` before."""
    import optuna

    if storage_url.startswith("sqlite:///") and not _stamped(Path(storage_url.removeprefix("sqlite:///"))):
        raise LookupError(f"{storage_url} holds no complete Optuna schema yet")
    storage = optuna.storages.RDBStorage(storage_url, skip_table_creation=True)
    return optuna.load_study(study_name=study_name, storage=storage)


def _stamped(path: Path) -> bool:
    """True when Optuna has finished creating its schema in this SQLite file (read only)."""
    import sqlite3
    from contextlib import closing

    if not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute("select count(*) from alembic_version").fetchone()[0] > 0
    except sqlite3.Error:  # no such table yet, or locked mid-creation
        return False
