"""A lab's shared database (PostgreSQL or MySQL) behind MLflow and Optuna, and the Optuna
study that sweep drivers on several machines join (`--study NAME`).

Checked before anything starts, each as one line: the URI's SQLAlchemy driver is installed
(SQLAlchemy's default for `postgresql://` is psycopg 3; `postgresql+psycopg2://` uses
psycopg2-binary, a dependency here), the server answers, and a study to join exists.

Joining one study: every driver opens the same Optuna study in the shared database; each
Tune trial asks the study for a new Optuna trial (a row of its own, numbered by the
database), so no trial is sampled twice and each driver runs its own `--num-samples`. The
drivers' samplers are seeded differently (`driver_seed`): with one seed, two drivers'
random start-up trials would propose the same points. Each driver keeps its own MLflow parent
run (its own `--name`, status, results table, report and `--resume`), tagged
`sparsesweep.study=NAME`; its trials' runs are its children, so each trial has one run. A
shared parent would be finished by whichever driver ends first and get two reports at once.
"""

from __future__ import annotations

import zlib
from typing import Any

from trainables.config import ConfigError

# SQLAlchemy's driver modules per dialect: the first is the dialect's default.
DRIVERS = {"postgresql": ("psycopg", "psycopg2", "pg8000", "asyncpg"),
           "mysql": ("MySQLdb", "pymysql", "mysql.connector")}
SERVER_DIALECTS = tuple(DRIVERS)


def is_server_uri(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in SERVER_DIALECTS


def check_driver(uri: str, flag: str) -> None:
    """The URI's dialect and driver can be loaded; else one line naming what is installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise ConfigError(f"{flag}: {uri.split('@')[-1]!r} is not a database URL SQLAlchemy knows ({e})") from None
    except ImportError as e:
        dialect = url.get_backend_name()
        have = [m for m in DRIVERS.get(dialect, ()) if _importable(m)]
        instead = (f"write {dialect}+{_sqlalchemy_name(have[0])}://... ({have[0]} is installed)" if have
                   else f"install a driver, e.g. pip install {'psycopg2-binary' if dialect == 'postgresql' else 'pymysql'}")
        raise ConfigError(f"{flag}: the {dialect} driver {url.get_driver_name()!r} is not installed "
                          f"({e.name or e}); {instead}") from None


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _sqlalchemy_name(module: str) -> str:
    return {"MySQLdb": "mysqldb", "mysql.connector": "mysqlconnector"}.get(module, module)


def check_reachable(uri: str, flag: str, timeout_s: int = 10) -> None:
    """A connection to the server opens (and closes) within `timeout_s`; nothing is written."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    # each DBAPI names its connect timeout its own way
    timeout_arg = {"psycopg2": "connect_timeout", "psycopg": "connect_timeout", "mysqldb": "connect_timeout",
                   "pymysql": "connect_timeout", "pg8000": "timeout",
                   "mysqlconnector": "connection_timeout"}.get(make_url(uri).get_driver_name())
    connect_args: dict[str, Any] = {timeout_arg: timeout_s} if timeout_arg else {}
    engine = create_engine(uri, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect():
            pass
    except Exception as e:  # noqa: BLE001 - the driver's OperationalError, DNS, refused, auth
        reason = str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{flag}: cannot connect to the database at {_where(uri)} ({reason})") from None
    finally:
        engine.dispose()


def _where(uri: str) -> str:
    """host:port/db of a URI, without user or password."""
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    return f"{url.host or 'localhost'}{f':{url.port}' if url.port else ''}/{url.database or ''}"


def check_server_uri(uri: str, flag: str) -> None:
    """A PostgreSQL/MySQL URI's server answers (its driver was checked by checks.check_db_url,
    which every database URL passes first)."""
    if is_server_uri(uri):
        check_reachable(uri, flag)


def existing_studies(storage_url: str) -> list[str]:
    """Names of the Optuna studies in the database, read with SQL (Optuna's storage object would
    create or stamp its schema on an empty database: a check must write nothing)."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(storage_url, poolclass=NullPool)
    try:
        with engine.connect() as db:
            if not inspect(db).has_table("studies"):
                return []
            return [row[0] for row in db.execute(text("select study_name from studies"))]
    finally:
        engine.dispose()


def check_study(storage_url: str, study: str, *, join: bool) -> None:
    """`--study NAME` with `--join-study`: the study must already exist in the storage."""
    if not study:
        if join:
            raise ConfigError("--join-study: name the study to join with --study NAME")
        return
    if "/" in study or not study.strip():
        raise ConfigError(f"--study: {study!r} must be a plain name")
    if not storage_url:
        raise ConfigError("--study: drivers share a study through a database; give --optuna-storage "
                          "postgresql+psycopg2://USER@HOST/DB (or another RDB URL)")
    if join:
        names = existing_studies(storage_url)
        if study not in names:
            raise ConfigError(f"--study: no study {study!r} in {_where(storage_url)} to join "
                              f"(existing: {', '.join(sorted(names)) or 'none'}); drop --join-study "
                              f"to create it")


def driver_seed(seed: int, sweep_name: str) -> int:
    """The sampler seed of one driver of a joined study: `seed` shifted by a stable hash of the
    driver's sweep name, so two drivers do not propose the same points."""
    return (seed + zlib.crc32(sweep_name.encode())) % 2**32
