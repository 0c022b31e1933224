"""Checkpoint integrity: a checksum manifest written last, verified before anything is loaded.

Why: a sweep runs for days on preemptible machines and shared storage. A checkpoint can be
cut short (a node dies while Tune copies it, a full disk, a partial upload) or damaged
later. `torch.load` of a truncated file fails with an obscure zip error, and a damaged
tensor would load silently. So every checkpoint directory gets `manifest.json` (size and
SHA-256 of each file), written after all other files; a directory whose manifest is missing
or does not match is refused with `CorruptCheckpoint`, and the caller resumes from the
newest intact checkpoint of the trial instead (`usable_checkpoint`).

Pure Python and torch-free on purpose: the Ray adapter and the tests use it too.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20
# errno values meaning "the storage cannot take more": a sweep resumes once it can.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class CorruptCheckpoint(ValueError):
    """A checkpoint directory that must not be loaded; the message is one line saying why."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> Iterable[Path]:
    """Regular files under `directory`, the manifest and hidden files (Tune's own) excluded."""
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if path.is_file() and rel.as_posix() != MANIFEST_FILE and not any(
                part.startswith(".") for part in rel.parts):
            yield path


def write_manifest(directory: Path, **info: int) -> Path:
    """Checksum every file of `directory` into its manifest; call it after the last file.

    `info` (e.g. epoch, step) is stored beside the checksums for humans and tools.
    Written to a temporary name and renamed, so a manifest is never half-written.
    """
    directory = Path(directory)
    files = {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in _files(directory)}
    body = {"version": MANIFEST_VERSION, **info, "files": files}
    tmp = directory / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, directory / MANIFEST_FILE)
    return directory / MANIFEST_FILE


def verify_checkpoint(directory: Path) -> dict:
    """The manifest of `directory` after checking every listed file; raises CorruptCheckpoint."""
    directory = Path(directory)
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        raise CorruptCheckpoint(f"checkpoint {directory} has no {MANIFEST_FILE} (incomplete write)")
    try:
        body = json.loads(manifest.read_text())
        files = body["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptCheckpoint(f"checkpoint {directory}: unreadable {MANIFEST_FILE} ({e})") from None
    for rel, want in files.items():
        path = directory / rel
        if not path.is_file():
            raise CorruptCheckpoint(f"checkpoint {directory}: {rel} is missing")
        size = path.stat().st_size
        if size != want["size"]:
            raise CorruptCheckpoint(f"checkpoint {directory}: {rel} has {size} bytes, "
                                    f"the manifest says {want['size']} (truncated or overwritten)")
        if _sha256(path) != want["sha256"]:
            raise CorruptCheckpoint(f"checkpoint {directory}: checksum mismatch in {rel}")
    return body


def sibling_checkpoints(directory: Path) -> list[Path]:
    """Every other `checkpoint_*` directory beside `directory` (same trial), by name.

    Tune names them checkpoint_000007, Ray Train checkpoint_<timestamp>.
    """
    directory = Path(directory)
    parent = directory.parent
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir()
                  if p.is_dir() and p.name.startswith("checkpoint_") and p.name != directory.name)


def usable_checkpoint(directory: Path, *, warn: Callable[[str], None] = print) -> Path | None:
    """The newest intact checkpoint of the trial that `directory` belongs to, or None.

    `directory` is the checkpoint the scheduler recorded last, which is not always what is
    on disk: it may be cut short or damaged (refused by its manifest), or already deleted
    (Tune keeps the newest N checkpoints and may delete one after its last saved state, when
    the driver is killed), and newer intact ones may exist beside it. Among the intact
    candidates the one with the most training (manifest epoch, step) wins. Every refusal and
    any choice other than `directory` is announced through `warn`, one line each.
    """
    directory = Path(directory)
    intact: list[tuple[tuple[int, int], Path]] = []
    for candidate in [directory, *sibling_checkpoints(directory)]:
        if candidate == directory and not candidate.exists():
            warn(f"sparsesweep: checkpoint {candidate} is gone (deleted after the last saved state)")
            continue
        try:
            body = verify_checkpoint(candidate)
        except CorruptCheckpoint as e:
            warn(f"sparsesweep: {e}; skipping it")
            continue
        intact.append(((int(body.get("epoch", -1)), int(body.get("step", -1))), candidate))
    if not intact:
        warn("sparsesweep: no intact checkpoint left; the trial restarts from the beginning")
        return None
    _, best = max(intact, key=lambda item: item[0])
    if best != directory:
        warn(f"sparsesweep: resuming from checkpoint {best} instead")
    return best
