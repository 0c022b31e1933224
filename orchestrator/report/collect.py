"""What a report reads: the sweeps (parent runs) of one MLflow experiment and their trials.

Everything comes through MLflow's client (`search_runs`, `get_metric_history`, artifact
download), so the same code reads a local SQLite store and a tracking server. Values are
returned exactly as MLflow holds them: a figure's CSV must show the numbers the client
returns, not numbers re-derived another way.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.tracking.tags import PARENT_TAG, SPACE_TAG, SWEEP_NAME_TAG
from trainables.config import family_of, label_of


def sweep_name(parent: Any) -> str:
    """A parent run's sweep (--name): its tag, since the run name describes the sweep instead
    (`ep_quick/e2e (grid; k; 2 trials)`); the run name for parents logged before the tag."""
    return parent.data.tags.get(SWEEP_NAME_TAG) or parent.info.run_name or parent.info.run_id


def differing_keys(trials: list[Trial]) -> list[str]:
    """Config keys (other than run.*) whose value differs between the trials: what a sweep varied."""
    keys = sorted({k for t in trials for k in t.params})
    return [k for k in keys if not k.startswith("run.") and len({t.params.get(k) for t in trials}) > 1]


class ReportError(ValueError):
    """Bad input (unknown experiment or parent run): one line, exit 2."""


def value(text: str | None) -> Any:
    """A param string as MLflow stores it, typed back (int, float, bool, None or str)."""
    if text is None or text == "None":
        return None
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@dataclass
class Trial:
    """One child run: its flat config, last metric values and tags."""

    run_id: str
    parent_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    def p(self, key: str, default: Any = None) -> Any:
        return value(self.params[key]) if key in self.params else default

    @property
    def method(self) -> str:
        return str(self.p("method.name", ""))

    @property
    def family(self) -> str:
        return family_of(self.method)  # as MLflow's family tag says

    @property
    def slt_label(self) -> str:
        """EP, hard/soft iEP (with its resets) or dense LRR: the methods of Fig. 3b."""
        if self.method == "iep":
            pruning, score = self.p("method.pruning", "soft"), self.p("method.score_reset", "inherit")
            if pruning == "soft" and score == "rewind" and not self.p("method.zero_init", False):
                return "EP"  # EP run afresh at every cycle's k_i (search_spaces IEP_METHODS["ep"])
            reset = ("FT" if self.p("method.lr_reset") == "hold" else
                     {"rewind": "SRw", "reinit": "SRi"}.get(score, "LR"))
            zero = " + zero init" if self.p("method.zero_init", False) else ""
            return f"{pruning} iEP ({reset}{zero})"
        return label_of(self.method)

    @property
    def dst_label(self) -> str:
        """criterion+growth, `static` (no updates) or `dense` (density 1): the rows of Fig. 1."""
        if self.method == "dense" or (self.p("method.density", 0.0) or 0.0) >= 1:
            return "dense"
        if self.p("method.update_period", 1) == 0:
            return "static"
        return f"{self.p('method.criterion')}+{self.p('method.growth')}"

    @property
    def imp_label(self) -> str:
        repel = self.p("method.repel", "off")
        return "IMP" if repel in ("off", None) else f"IMP + J_r ({repel}, λ={self.p('method.repel_lambda')})"


@dataclass
class Runs:
    """The sweeps of one experiment (or one parent run) and their finished trials."""

    client: Any
    experiment_id: str
    parents: dict[str, Any]  # run_id -> mlflow Run
    trials: list[Trial]
    experiment: str = ""
    _dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sparsesweep-report-")))

    def of(self, *families: str) -> list[Trial]:
        return [t for t in self.trials if t.family in families]

    def history(self, trial: Trial, key: str) -> list[tuple[int, float]]:
        """(step, value) of one metric, in step order, as the client returns it."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(trial.run_id, key))

    def per_step(self, trials: list[Trial], keys: list[str], params: list[str]) -> pd.DataFrame:
        """One row per (trial, step) with the given metrics' histories and the trials' params."""
        rows: list[dict[str, Any]] = []
        for t in trials:
            steps: dict[int, dict[str, Any]] = {}
            for key in keys:
                for step, v in self.history(t, key):
                    steps.setdefault(step, {})[key] = v
            base = {"run_id": t.run_id, **{k: t.p(k) for k in params}}
            rows += [{**base, "step": s, **vals} for s, vals in sorted(steps.items())]
        return pd.DataFrame(rows)

    def artifact(self, trial: Trial, path: str) -> Path | None:
        """Download one artifact file of a trial (None when it does not exist)."""
        folder, _, name = path.rpartition("/")
        if name not in {Path(a.path).name for a in self.client.list_artifacts(trial.run_id, folder or None)}:
            return None
        dst = self._dir / trial.run_id
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(trial.run_id, path, str(dst)))

    def artifact_dir(self, trial: Trial, folder: str) -> Path | None:
        """Download a trial's artifact folder; returns the directory that holds `folder`."""
        if not self.client.list_artifacts(trial.run_id, folder):
            return None
        dst = self._dir / trial.run_id
        if not (dst / folder).is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            self.client.download_artifacts(trial.run_id, folder, str(dst))
        return dst

    def artifacts(self, trial: Trial, folder: str) -> list[str]:
        return sorted(a.path for a in self.client.list_artifacts(trial.run_id, folder) if not a.is_dir)

    def close(self) -> None:
        """Remove the downloaded artifacts (the report's own files are elsewhere)."""
        shutil.rmtree(self._dir, ignore_errors=True)

    @cached_property
    def spaces(self) -> set[str]:
        return {p.data.tags.get(SPACE_TAG, p.data.params.get("space", "")) for p in self.parents.values()}


def load_runs(tracking_uri: str, experiment: str, parent: str | None = None) -> Runs:
    """Parent runs (one, or every sweep of the experiment) and their finished child runs."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(f"--experiment: no MLflow experiment {experiment!r} at {tracking_uri}")
    runs = _search(client, exp.experiment_id, "")
    if parent:
        try:
            p = client.get_run(parent)
        except MlflowException:
            raise ReportError(f"--parent: no run {parent!r} at {tracking_uri}") from None
        if p.info.experiment_id != exp.experiment_id or PARENT_TAG in p.data.tags:
            raise ReportError(f"--parent: {parent!r} is not a sweep (parent run) of experiment {experiment!r}")
        parents = {parent: p}
    else:
        parents = {r.info.run_id: r for r in runs if PARENT_TAG not in r.data.tags}
    trials = [Trial(r.info.run_id, r.data.tags[PARENT_TAG], dict(r.data.params), dict(r.data.metrics),
                    dict(r.data.tags))
              for r in runs
              if r.data.tags.get(PARENT_TAG) in parents and r.info.status == "FINISHED"]
    return Runs(client, exp.experiment_id, parents, trials, experiment)


def _search(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out
