"""The one reader of a sweep's Tune folder: which experiment state Tune restores from, and
the trials that state records, with their reports and checkpoints (JSON only, no unpickling).

`--sync-mlflow` replays MLflow from it; the state checks pick the same file Tune would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY as TRAIN_CHECKPOINT_KEY

from trainables.keys import DIVERGED_KEY

logger = logging.getLogger(__name__)

EXPERIMENT_STATE = "experiment_state-*.json"
RESULT_FILE = "result.json"


def newest_state(sweep_dir: Path) -> Path | None:
    """The experiment state Tune restores from (the newest name: Tune's own rule)."""
    found = sorted(Path(sweep_dir).glob(EXPERIMENT_STATE))
    return found[-1] if found else None


@dataclass
class TuneTrial:
    """One trial as Tune's experiment state (JSON part) records it."""

    trial_id: str
    name: str
    status: str  # PENDING / RUNNING / PAUSED / TERMINATED / ERROR
    config: dict[str, Any]
    path: Path
    last_result: dict[str, Any]
    num_failures: int

    def results(self) -> Iterator[dict[str, Any]]:
        """Every report of the trial, in order (a resumed trial's re-run epochs included)."""
        path = self.path / RESULT_FILE
        if not path.is_file():
            return
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        logger.warning("%s: unreadable line skipped", path)

    def diverged(self) -> bool:
        return any(r.get(DIVERGED_KEY) for r in self.results())

    def checkpoint_dir(self) -> Path | None:
        """The trial's latest checkpoint: the last result's, the newest on disk, or DDP's."""
        name = self.last_result.get("checkpoint_dir_name")
        if name and (self.path / name).is_dir():
            return self.path / name
        train = self.last_result.get(TRAIN_CHECKPOINT_KEY)
        if train and Path(train).is_dir():
            return Path(train)
        found = sorted(p for p in self.path.glob("checkpoint_*") if p.is_dir())
        return found[-1] if found else None


def read_trials(sweep_dir: Path) -> list[TuneTrial]:
    """The trials of Tune's newest experiment state in `sweep_dir` (JSON only, no unpickling)."""
    state = newest_state(sweep_dir)
    if state is None:
        return []
    data = json.loads(state.read_text())
    trials = []
    for trial_json, meta_json in data.get("trial_data", []):
        t = json.loads(trial_json)
        meta = json.loads(meta_json) if isinstance(meta_json, str) else dict(meta_json)
        name = t.get("custom_trial_name") or f"{t.get('trainable_name', 'trial')}_{t['trial_id']}"
        trials.append(TuneTrial(trial_id=t["trial_id"], name=name, status=t.get("status", ""),
                                config=dict(t.get("config") or {}),
                                path=sweep_dir / t.get("relative_logdir", ""),
                                last_result=dict(meta.get("last_result") or {}),
                                num_failures=int(meta.get("num_failures") or 0)))
    return trials
