"""What a user types, checked by class before anything starts: numbers, names, URLs, drivers.

Each class of value has one checker here, used by every flag of that class, so a kind of bad
input is refused everywhere or nowhere:
- numbers (`Number`): finite, in a named range, integers within what their consumer accepts;
- names that become folders or run names (`check_name`): bounded length, no path characters;
- URLs (`parse_url`, `check_db_url`): parseable, with an installed database driver;
- messages (`one_line`): a value holding a newline or a control character is escaped.

Light imports only (no Ray, MLflow or Optuna): the CLI runs these before anything starts.
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from trainables.config import INT64_MAX, INT64_MIN, SEED_MAX, ConfigError

__all__ = ["INT64_MAX", "INT64_MIN", "NAME_MAX", "Number", "SEED_MAX", "argparse_type", "check_db_url",
           "check_local_path", "check_name", "check_storage", "check_writable", "one_line", "parse_url"]


def one_line(text: str) -> str:
    """`text` on one line: newlines, tabs and other control characters written as escapes."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


# ----- numbers ---------------------------------------------------------------------------------

def _fmt(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


@dataclass(frozen=True)
class Number:
    """A numeric flag's type and range; `parse` is the only way a flag's text becomes a number.

    NaN compares false with everything, so a range check alone would let it through: every
    value is made finite first, then checked against both ends of its range, and the message
    names the range."""

    integer: bool
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # (lo, ...] instead of [lo, ...]
    hi_open: bool = False
    why: str = ""  # what the range comes from, when not obvious (e.g. "a TCP port")

    def allowed(self) -> str:
        lo = INT64_MIN if self.integer and self.lo is None else self.lo
        hi = INT64_MAX if self.integer and self.hi is None else self.hi
        kind = "an integer" if self.integer else "a number"
        span = (f"{'(' if self.lo_open else '['}{'-inf' if lo is None else _fmt(lo)}, "
                f"{'inf' if hi is None else _fmt(hi)}{')' if self.hi_open else ']'}")
        return f"{kind} in {span}" + (f" ({self.why})" if self.why else "")

    def parse(self, flag: str, text: str | float) -> int | float:
        """The value of `flag`, or ConfigError naming the flag, the value and what is allowed."""
        shown = one_line(repr(text) if isinstance(text, str) else str(text))
        value: int | float
        try:
            if isinstance(text, (int, float)) and not isinstance(text, bool):
                value = text
            elif self.integer:
                value = int(str(text).strip())
            else:
                value = float(str(text).strip())
        except ValueError:
            raise ConfigError(f"{flag}: {shown} is not {self.allowed()}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag}: {shown} is not finite; allowed: {self.allowed()}")
        if self.integer and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{flag}: {shown} is not {self.allowed()}")
            value = int(value)
        lo = INT64_MIN if self.integer and self.lo is None else self.lo
        hi = INT64_MAX if self.integer and self.hi is None else self.hi
        below = lo is not None and (value <= lo if self.lo_open else value < lo)
        above = hi is not None and (value >= hi if self.hi_open else value > hi)
        if below or above:
            raise ConfigError(f"{flag}: {shown} is out of range; allowed: {self.allowed()}")
        return value


# ----- names -----------------------------------------------------------------------------------

NAME_MAX = 100  # characters: a folder name (255 bytes), Tune's trial folders and MLflow's run names fit
_NAME_PUNCT = "-_.+=@,:"


def check_name(flag: str, name: str) -> str:
    """A name that becomes a folder, a run name or a study name: 1..NAME_MAX letters (any
    script), digits and -_.+=@,: ; not starting with '.' or '-'. Returns it unchanged."""
    shown = one_line(repr(name))
    if not name:
        raise ConfigError(f"{flag}: the name is empty; allowed: 1-{NAME_MAX} letters, digits and {_NAME_PUNCT}")
    if len(name) > NAME_MAX or len(name.encode()) > 2 * NAME_MAX:
        raise ConfigError(f"{flag}: {shown[:40]}... has {len(name)} characters; allowed: at most "
                          f"{NAME_MAX} (it becomes a folder name)")
    bad = sorted({ch for ch in name if not (ch.isalnum() or ch in _NAME_PUNCT)})
    if bad:
        shown_bad = " ".join(one_line(repr(ch)) for ch in bad[:5])
        raise ConfigError(f"{flag}: {shown} holds {shown_bad}; allowed: letters, digits and {_NAME_PUNCT} "
                          f"(it becomes a folder name)")
    if name[0] in ".-":
        raise ConfigError(f"{flag}: {shown} starts with {name[0]!r}; allowed: a name starting with a "
                          f"letter, a digit or _")
    if unicodedata.normalize("NFC", name) != name:
        raise ConfigError(f"{flag}: {shown} is not in Unicode NFC form; allowed: an NFC name (a folder "
                          f"name must read back the same)")
    return name


# ----- URLs, paths and drivers -------------------------------------------------------------

def parse_url(flag: str, url: str) -> SplitResult:
    """`url` split, with its host and port checked (`http://[::1` or a port past 65535 is one
    line, not Python's ValueError)."""
    shown = one_line(repr(url))
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port: ValueError when out of range or not a number
    except ValueError as e:
        raise ConfigError(f"{flag}: {shown} is not a valid URL ({one_line(str(e))})") from None
    return parts


def check_writable(path: Path, flag: str) -> None:
    """Nothing on the way to `path` may be a file: its nearest existing ancestor must be a
    writable directory (nothing is created here)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what = "a file, not a directory" if probe.is_file() else "not a writable directory"
        raise ConfigError(f"{flag}: cannot write under {one_line(str(path))} ({one_line(str(probe))} is {what})")


# The Python package each SQLAlchemy driver imports, for the install hint.
_DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pymysql": "PyMySQL",
                    "mysqldb": "mysqlclient", "pyodbc": "pyodbc", "pymssql": "pymssql", "pg8000": "pg8000",
                    "asyncpg": "asyncpg", "mysqlconnector": "mysql-connector-python"}


def check_db_url(flag: str, url: str) -> None:
    """An SQLAlchemy database URL whose dialect exists and whose driver is installed (the one
    SQLAlchemy itself would import), and, for SQLite, whose file can be created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = one_line(repr(url))
    try:
        parsed = make_url(url)
        shown = one_line(repr(parsed.render_as_string(hide_password=True)))
        dialect = parsed.get_dialect()
    except NoSuchModuleError:  # an ArgumentError too
        raise ConfigError(f"{flag}: {shown}: SQLAlchemy has no dialect {parsed.drivername!r}; allowed: "
                          f"sqlite, postgresql, mysql, mssql (optionally +DRIVER)") from None
    except ArgumentError:
        raise ConfigError(f"{flag}: {shown} is not a database URL (dialect+driver://USER@HOST/DB)") from None
    except ValueError as e:  # a port that is not a number
        raise ConfigError(f"{flag}: {shown} is not a valid URL ({one_line(str(e))})") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        from orchestrator.cluster.shared_db import check_driver

        check_driver(url, flag)  # names the installed driver to write instead, if there is one
        driver = dialect.driver
        package = _DRIVER_PACKAGES.get(driver, driver)
        raise ConfigError(f"{flag}: {parsed.get_backend_name()} needs the Python driver {driver!r}, which is "
                          f"not installed ({one_line(str(e))}); pip install {package}, or name an installed "
                          f"driver as {parsed.get_backend_name()}+DRIVER://") from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(f"{flag}: {shown} names no database file; allowed: sqlite:///PATH")
        check_writable(Path(parsed.database).expanduser().resolve().parent, flag)


def argparse_type(flag: str, number: Number) -> Callable[[str], int | float]:
    """`number` as an argparse `type=`: its one-line refusal becomes argparse's error."""
    import argparse

    def parse(text: str) -> int | float:
        try:
            return number.parse(flag, text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{flag}: ")) from None

    parse.__name__ = "integer" if number.integer else "number"
    return parse


# The URI schemes pyarrow.fs.FileSystem.from_uri opens (Tune writes through it), and the
# pyarrow extension each needs (a pyarrow build may lack one).
STORAGE_SCHEMES = {"s3": "pyarrow._s3fs", "gs": "pyarrow._gcsfs", "gcs": "pyarrow._gcsfs",
                   "abfs": "pyarrow._azurefs", "abfss": "pyarrow._azurefs",
                   "hdfs": "pyarrow._hdfs", "viewfs": "pyarrow._hdfs"}
PATH_MAX_BYTES = 3000  # Linux's PATH_MAX is 4096: room for tune/NAME/trial folders/checkpoint files
PART_MAX_BYTES = 255  # one folder name (NAME_MAX)


def check_storage(flag: str, storage: str) -> str:
    """--storage: a local folder (nothing on the way a file, each name short enough) or a URI
    pyarrow opens here (s3://, gs://, abfs://, hdfs://...). Returns it, file:// as a path."""
    import importlib.util

    if "://" not in storage:
        return check_local_path(flag, storage)
    parts = parse_url(flag, storage)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return check_local_path(flag, parts.path)
    supported = ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
    if scheme not in STORAGE_SCHEMES:
        raise ConfigError(f"{flag}: {one_line(repr(storage))}: the scheme {scheme!r} is not one Tune can "
                          f"write to; allowed: a local folder, file://, {supported}")
    if importlib.util.find_spec(STORAGE_SCHEMES[scheme]) is None:
        raise ConfigError(f"{flag}: this pyarrow is built without {scheme}:// support "
                          f"({STORAGE_SCHEMES[scheme]}); use a local folder or another scheme")
    if scheme in ("hdfs", "viewfs") and not os.environ.get("JAVA_HOME"):
        raise ConfigError(f"{flag}: {scheme}:// needs Hadoop's libhdfs and a JVM (JAVA_HOME is not set)")
    if not parts.netloc:
        raise ConfigError(f"{flag}: {one_line(repr(storage))} names no bucket or host; allowed: "
                          f"{scheme}://BUCKET/PATH")
    return storage


def check_local_path(flag: str, path: str) -> str:
    """A local path the sweep can create folders under; returns it unchanged."""
    if not path or any(not (ch.isprintable() or ch == " ") for ch in path):
        raise ConfigError(f"{flag}: {one_line(repr(path))} is not a usable path (empty, or holds a "
                          f"control character)")
    full = Path(path).expanduser().absolute()
    long_part = next((p for p in full.parts if len(p.encode()) > PART_MAX_BYTES), None)
    if long_part is not None:
        raise ConfigError(f"{flag}: the folder name {one_line(long_part[:40])}... is longer than "
                          f"{PART_MAX_BYTES} bytes, the most a file system takes")
    if len(str(full).encode()) > PATH_MAX_BYTES:
        raise ConfigError(f"{flag}: the path is {len(str(full).encode())} bytes long; allowed: at most "
                          f"{PATH_MAX_BYTES} (the sweep's files go {PART_MAX_BYTES * 4} bytes deeper)")
    check_writable(full, flag)
    return path
