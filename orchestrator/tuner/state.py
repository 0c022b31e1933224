"""Tune's saved state, kept resumable: a backup of its last readable copy, repairs before --resume.

Why: two failures of Tune's own bookkeeping break `--resume`, both seen in this repo's tests.
- Tune rewrites `experiment_state-*.json` in place. A full disk cuts it short, and
  `Tuner.restore` then logs "Failed to restore the run state" and silently starts the
  experiment over, with trials that have no config. So the driver keeps a copy of the last
  readable state (`.sparsesweep-tune-state/`, replaced atomically: a failed copy leaves the
  previous one), and `--resume` puts it back when the newest state does not parse.
- Tune deletes old checkpoints (`num_to_keep`) and can die before it saves a state that says
  so. It then refuses to restore a trial whose recorded checkpoint is gone ("does not exist on
  storage anymore"), and logs a traceback when it later deletes an older recorded one that is
  gone. `--resume` puts an empty directory in place of every recorded checkpoint that is gone
  (the latest and the ones Tune keeps to delete later). Such a directory has no manifest, so
  the trial skips it and resumes from its newest intact checkpoint
  (`trainables.checkpoint_io.usable_checkpoint`); Tune deletes it in its turn.

Only Tune's JSON is parsed here; its pickles are copied as bytes, never loaded.
"""

from __future__ import annotations

import binascii
import json
import os
import pickletools
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from orchestrator.settings import TUNE_STATE_BACKUP
from orchestrator.tuner.folder import newest_state
from trainables.config import ConfigError

STATE_FILES = ("experiment_state-*.json", "basic-variant-state-*.json", "search_gen_state-*.json",
               "searcher-state-*.pkl", "callback-states-*.pkl", "tuner.pkl")
BACKUP_EVERY_S = float(os.environ.get("SPARSESWEEP_STATE_BACKUP_S", "10"))


def _pickle_problem(path: Path) -> str | None:
    """Why a pickle is cut short or damaged, found by walking its opcodes (nothing is loaded)."""
    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
    except Exception as e:  # noqa: BLE001 - genops raises ValueError or others on bad bytes
        return f"{type(e).__name__}: {e}"
    return None


def state_problem(sweep_dir: Path) -> str | None:
    """Why Tune's saved state cannot be restored as it is, or None.

    Tune writes the experiment state in place, and a storage sync copies the searcher's and
    callbacks' states non-atomically: a full disk can cut any of them short. Restoring from a
    cut file makes Tune start the experiment over, so each newest file Tune would read is
    checked: the experiment state parsed as JSON, the rest (pickles, whatever their suffix)
    walked opcode by opcode (never loaded).
    """
    sweep_dir = Path(sweep_dir)
    state = newest_state(sweep_dir)
    if state is None:
        return f"no Tune state (experiment_state-*.json) in {sweep_dir}"
    tuner = sweep_dir / "tuner.pkl"
    if not tuner.is_file() or tuner.stat().st_size == 0:
        return f"Tune's {tuner.name} is missing or empty"
    for pattern in STATE_FILES:
        found = sorted(sweep_dir.glob(pattern))
        if not found:
            continue
        newest = found[-1]
        if pattern.startswith("experiment_state"):  # JSON; the other .json files are pickles
            try:
                json.loads(newest.read_text())
            except (OSError, ValueError) as e:
                return f"Tune's saved state {newest.name} is unreadable ({type(e).__name__}: {e})"
        elif (why := _pickle_problem(newest)) is not None:
            return f"Tune's saved state {newest.name} is unreadable ({why})"
    return None


def backup_state(sweep_dir: Path) -> bool:
    """Copy Tune's state files, if readable, into TUNE_STATE_BACKUP (atomically); True when done."""
    sweep_dir = Path(sweep_dir)
    if state_problem(sweep_dir) is not None:
        return False
    tmp = sweep_dir / f"{TUNE_STATE_BACKUP}.tmp-{os.getpid()}"
    target = sweep_dir / TUNE_STATE_BACKUP
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for pattern in STATE_FILES:
            for src in sweep_dir.glob(pattern):
                shutil.copy2(src, tmp / src.name)
        old = sweep_dir / f"{TUNE_STATE_BACKUP}.old-{os.getpid()}"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return True
    except OSError:  # a full disk: the previous backup stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        return False


_CHECKPOINT = re.compile(r"(?:^|/)(checkpoint_\d+)/?$")


def _recorded_checkpoints(meta: dict[str, Any]) -> set[str]:
    """Names of the checkpoints Tune's saved state records for a trial: its last result's, and
    every one its checkpoint manager keeps (pickled inside the JSON: the pickle's strings are
    read opcode by opcode, never loaded)."""
    names = set()
    if name := (meta.get("last_result") or {}).get("checkpoint_dir_name"):
        names.add(str(name))
    manager = meta.get("checkpoint_manager")
    if isinstance(manager, dict) and isinstance(manager.get("value"), str):
        try:
            for _, arg, _ in pickletools.genops(binascii.unhexlify(manager["value"])):
                if isinstance(arg, str) and (match := _CHECKPOINT.search(arg)):
                    names.add(match.group(1))
        except Exception:  # noqa: BLE001 - a damaged pickle: Tune reports it in its own words
            pass
    return names


def _trials(state: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    data = json.loads(state.read_text())
    out = []
    for trial_json, meta_json in data.get("trial_data", []):
        meta = json.loads(meta_json) if isinstance(meta_json, str) else dict(meta_json)
        out.append((json.loads(trial_json), meta))
    return out


def prepare_restore(sweep_dir: Path) -> list[str]:
    """Make `sweep_dir` restorable by Tune; return notes on what was repaired.

    Raises ConfigError (one line) when Tune's state is unreadable and no backup exists.
    """
    sweep_dir = Path(sweep_dir)
    notes: list[str] = []
    problem = state_problem(sweep_dir)
    if problem is not None:
        backup = sweep_dir / TUNE_STATE_BACKUP
        if state_problem(backup) is not None:
            raise ConfigError(f"--resume: {problem}, and no readable copy is kept in {backup}; "
                              f"the sweep cannot be resumed (start it again under another --name)")
        for pattern in STATE_FILES:  # all of them: Tune reads the newest of each kind
            for current in sweep_dir.glob(pattern):
                os.replace(current, current.with_name(current.name + ".corrupt"))
        for src in backup.iterdir():
            shutil.copy2(src, sweep_dir / src.name)
        notes.append(f"{problem}: restored Tune's last readable state from {backup} "
                     f"(the trials resume from their newest intact checkpoints)")
    state = newest_state(sweep_dir)
    assert state is not None
    for trial, meta in _trials(state):
        trial_dir = sweep_dir / trial.get("relative_logdir", "")
        latest = (meta.get("last_result") or {}).get("checkpoint_dir_name")
        for name in sorted(_recorded_checkpoints(meta)):
            if not trial_dir.is_dir() or (trial_dir / name).exists():
                continue
            (trial_dir / name).mkdir()
            if name == latest:  # an older one is only Tune's to delete: nothing to say
                notes.append(f"trial {trial['trial_id']}: its checkpoint {name} was deleted after Tune's "
                             f"last saved state; it resumes from its newest intact checkpoint")
    return notes


class TuneStateBackup(Callback):
    """Driver-side: after Tune rewrites its state, keep a readable copy (at most every few s)."""

    def __init__(self, sweep_dir: str) -> None:
        self.sweep_dir = str(sweep_dir)
        self._last = 0.0
        self._seen: float | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks (tuner.pkl)
        return {"sweep_dir": self.sweep_dir, "_last": 0.0, "_seen": None}

    def _maybe_backup(self, force: bool = False) -> None:
        state = newest_state(Path(self.sweep_dir))
        if state is None:
            return
        try:
            mtime = state.stat().st_mtime
        except OSError:
            return
        now = time.monotonic()
        if mtime != self._seen and (force or now - self._last >= BACKUP_EVERY_S):
            if backup_state(Path(self.sweep_dir)):
                self._seen = mtime
            self._last = now

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._maybe_backup()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._maybe_backup(force=True)
