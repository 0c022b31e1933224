"""A durable outbox for MLflow writes: a sweep loses nothing while its tracking server is down.

Why: a sweep of thousands of trials runs for days; a tracking server restarts, a network
hiccups, a database locks. Every write the driver makes to MLflow is therefore first appended
to an append-only spool file on the driver's disk (one JSON object per line, flushed and
fsync'd), then applied. What was applied is marked by a byte offset, saved after each applied
entry. While MLflow does not answer, entries pile up and training goes on; once it answers
again they are applied in order. Applying an entry twice is harmless (the writer skips metric
steps a run already holds, params it already has; tags and statuses are idempotent), so a crash
between applying and saving the offset costs nothing.

Files, in the sweep's directory:
- ``mlflow-spool.jsonl``: the entries; emptied whenever everything has been applied;
- ``mlflow-spool.offset``: how many bytes of it are applied;
- ``mlflow-spool-files/``: hard links (or copies) of files to upload (masks, figures), taken
  when the entry is written, because Tune deletes old checkpoints.

If the spool itself cannot be written (a full disk), entries wait in memory and are written
before any later one, so the order holds. `Outbox` adds the retry policy: a cheap health probe
and exponential backoff, so a dead server costs the driver one short probe now and then instead
of a blocked event loop.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPOOL_FILE = "mlflow-spool.jsonl"
OFFSET_FILE = "mlflow-spool.offset"
FILES_DIR = "mlflow-spool-files"

Op = dict[str, Any]


class Spool:
    """Append-only, fsync'd log of operations with a committed offset (see the module doc).

    One instance per directory and process (`Spool.open`), so the parent-run tracker and the
    Tune callback, both in the driver, append to one ordered log. ``directory=None`` keeps the
    log in memory only (library use and tests without a sweep directory).
    """

    _open: dict[str, Spool] = {}

    def __init__(self, directory: Path | None) -> None:
        self.directory = None if directory is None else Path(directory)
        self._memory: list[Op] = []  # entries not (yet) on disk, after every entry on disk
        self._ids = itertools.count()
        if self.directory is not None:
            self._repair()

    @classmethod
    def open(cls, directory: Path | None) -> Spool:
        """The process-wide spool of `directory` (a fresh in-memory one for None)."""
        if directory is None:
            return cls(None)
        key = str(Path(directory).resolve())
        if key not in cls._open:
            cls._open[key] = cls(Path(key))
        return cls._open[key]

    # ------------------------------------------------------------------ paths

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory / SPOOL_FILE

    def _offset_path(self) -> Path:
        assert self.directory is not None
        return self.directory / OFFSET_FILE

    def _files_dir(self) -> Path:
        assert self.directory is not None
        return self.directory / FILES_DIR

    # ------------------------------------------------------------------ state

    def _committed(self) -> int:
        try:
            offset = int(self._offset_path().read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
        size = self.path.stat().st_size if self.path and self.path.exists() else 0
        return offset if 0 <= offset <= size else 0  # a crash between truncate and reset

    def _repair(self) -> None:
        """Drop a half-written last line (a crash mid-append) so the next append starts clean."""
        path = self.path
        if path is None or not path.exists():
            return
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            logger.warning("MLflow spool %s: dropping a half-written last entry (%d bytes)",
                           path, len(data) - end)
            with open(path, "r+b") as f:
                f.truncate(end)

    def pending_count(self) -> int:
        """Entries not applied yet (on disk and in memory)."""
        return sum(1 for _ in self.pending())

    def unsaved_count(self) -> int:
        """Entries that only exist in memory (the spool file could not be written)."""
        return len(self._memory) if self.directory is not None else 0

    def __bool__(self) -> bool:  # a spool object is always "there", even when empty
        return True

    # ------------------------------------------------------------------ writing

    def append(self, op: Op) -> None:
        """Add an entry after every earlier one; durable on return unless the disk refuses."""
        if self.directory is None:
            self._memory.append(op)
            return
        self._memory.append(op)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:  # type: ignore[arg-type]
                while self._memory:
                    f.write((json.dumps(self._memory[0], allow_nan=False) + "\n").encode())
                    f.flush()
                    os.fsync(f.fileno())
                    self._memory.pop(0)
        except OSError as e:
            logger.warning("MLflow spool %s cannot be written (%s); %d entr(ies) wait in memory",
                           self.path, e, len(self._memory))

    def keep_files(self, sources: list[tuple[Path, str]]) -> list[tuple[str, str]]:
        """Hard-link (or copy) files and trees to upload into the spool; return (path, artifact_path).

        The links keep the bytes even when Tune later deletes the checkpoint they came from.
        A source that cannot be kept (full disk, in-memory spool) is referenced where it is.
        """
        out: list[tuple[str, str]] = []
        if self.directory is None:
            return [(str(p), a) for p, a in sources]
        target = self._files_dir() / f"{time.time_ns()}-{next(self._ids)}"
        for i, (src, artifact_path) in enumerate(sources):
            dst = target / str(i) / src.name
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dst, copy_function=_link_or_copy)
                else:
                    _link_or_copy(src, dst)
                out.append((str(dst), artifact_path))
            except OSError as e:
                logger.warning("MLflow spool: cannot keep a copy of %s (%s); it will be read "
                               "where it is", src, e)
                out.append((str(src), artifact_path))
        return out

    # ------------------------------------------------------------------ reading

    def pending(self) -> Iterator[tuple[int | None, Op]]:
        """(end offset, entry) of every entry not applied, oldest first; memory ones last (None)."""
        if self.path is not None and self.path.exists():
            start = self._committed()
            with open(self.path, "rb") as f:
                f.seek(start)
                pos = start
                for line in f:
                    pos += len(line)
                    if not line.endswith(b"\n"):
                        break
                    try:
                        op = json.loads(line)
                    except ValueError:
                        logger.warning("MLflow spool %s: unreadable entry at byte %d skipped",
                                       self.path, pos - len(line))
                        continue
                    yield pos, op
        yield from ((None, op) for op in list(self._memory))

    def commit(self, end: int | None) -> None:
        """Mark everything up to `end` applied (None: the oldest in-memory entry)."""
        if end is None:
            if self._memory:
                self._memory.pop(0)
        elif self.directory is not None:
            tmp = self.directory / f".{OFFSET_FILE}.tmp"
            tmp.write_text(str(end))
            os.replace(tmp, self._offset_path())
        self._compact()

    def _compact(self) -> None:
        """Everything applied: empty the file and drop the kept files (truncate, then reset)."""
        if self.directory is None or self._memory or self.path is None or not self.path.exists():
            return
        if self._committed() < self.path.stat().st_size:
            return
        try:
            with open(self.path, "r+b") as f:
                f.truncate(0)
            self._offset_path().write_text("0")
            shutil.rmtree(self._files_dir(), ignore_errors=True)
        except OSError as e:  # compaction is an optimisation; the offset stays valid
            logger.debug("MLflow spool compaction skipped: %s", e)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------- retry policy


class Outbox:
    """Apply a spool's entries in order, with backoff while the destination does not answer.

    `apply(op)` performs one entry; `probe()` says cheaply whether trying is worthwhile;
    `permanent(exc)` tells an entry that can never succeed (it is skipped with a warning, so
    one bad entry cannot block the rest) from a transient failure (the entry stays, later
    ones wait behind it). With `strict`, any failure raises (tests).
    """

    def __init__(self, spool: Spool, apply: Callable[[Op], None], *, probe: Callable[[], bool],
                 permanent: Callable[[BaseException], bool], strict: bool = False,
                 first_backoff_s: float = 2.0, max_backoff_s: float = 60.0) -> None:
        self.spool = spool
        self.apply = apply
        self.probe = probe
        self.permanent = permanent
        self.strict = strict
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.skipped = 0  # entries dropped as permanently failing
        self.replayed = 0  # entries applied after an outage
        self._backoff = 0.0
        self._retry_at: float | None = None  # set while the destination is considered down
        self._outage_started: float | None = None

    @property
    def down(self) -> bool:
        """True while the last attempt failed and entries wait."""
        return self._retry_at is not None

    def submit(self, op: Op) -> None:
        """Spool `op`, then apply whatever is due (now, unless backing off)."""
        self.spool.append(op)
        self.drain()

    def drain(self, *, force: bool = False) -> bool:
        """Apply pending entries in order; True when none are left. `force` ignores the backoff."""
        if self._retry_at is not None:
            if not force and time.monotonic() < self._retry_at:
                return False
            if not self.probe():
                self._fail(None)
                return False
        for end, op in self.spool.pending():
            try:
                self.apply(op)
            except Exception as e:
                if self.strict:
                    raise
                if self.permanent(e):
                    self.skipped += 1
                    logger.warning("MLflow rejected a spooled %s entry; skipped it: %s",
                                   op.get("op"), e, exc_info=True)
                    self.spool.commit(end)
                    continue
                self._fail(e)
                return False
            if self._retry_at is not None:
                self.replayed += 1
            self.spool.commit(end)
        if self._retry_at is not None:
            logger.warning("MLflow answers again: replayed %d spooled entr(ies) after %.0f s",
                           self.replayed, time.monotonic() - (self._outage_started or 0.0))
        self._retry_at = None
        self._outage_started = None
        self._backoff = 0.0
        return True

    def _fail(self, exc: BaseException | None) -> None:
        first = self._retry_at is None
        self._backoff = self.first_backoff_s if first else min(self._backoff * 2, self.max_backoff_s)
        self._retry_at = time.monotonic() + self._backoff
        if first:
            self._outage_started = time.monotonic()
            self.replayed = 0
            logger.warning("MLflow does not answer (%s); training goes on and its logs wait in %s",
                           exc if exc is not None else "health check failed",
                           self.spool.path or "memory")

    def drain_until(self, timeout_s: float, poll_s: float = 1.0) -> bool:
        """Keep retrying for up to `timeout_s` (the end of a sweep); True when all is applied."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.drain(force=True):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
