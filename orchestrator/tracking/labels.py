"""What makes a sweep readable in MLflow's UI (3.17): run names, tags, the parent's note, the
dataset input, the mask figure, and the experiment tag that opens the runs table.

Why each piece, checked against MLflow 3.17.2's bundled UI:

- Run names say what differs: the method, the swept keys' short names and values, the seed
  (``soft_iep/k=0.9/lr=0.1/seed=1``); Tune's ``trial_78baa_00000`` says nothing and the table
  cuts it to the same-looking prefix. Names are a function of the trial's config (and, for
  Optuna, its Tune trial number), so a resume or ``--sync-mlflow`` gives the same name.
- ``mlflow.runColor``: the UI's colour of a run in charts. Without it the UI hashes the run id
  into a 29-colour palette, so two of three runs can share a colour; here the n-th trial of the
  sweep takes the n-th colour of a 10-colour palette.
- ``mlflow.experimentKind = custom_model_development``: the experiment's kind for UIs that read
  it. 3.17.2's bundled UI does not: its "GenAI / Model training" switch decides (the URL's
  ``workflowType``, else the browser's saved choice, GenAI by default), and a fresh browser
  opens any experiment on the GenAI overview (seen in headless Chromium, tests/test_browser.py).
  So the links to the saved view (`orchestrator.tracking.views.view_url`) carry ``workflowType=machine_learning`` and go to the
  ``/runs`` page itself: on ``#/experiments/ID?…`` the UI redirects to ``/runs`` and drops the
  shared view's key.
- ``mlflow.source.name`` / ``mlflow.source.type`` (and ``mlflow.source.git.commit`` when the code
  is a git checkout) fill the Source column; the dataset input (`dataset_input`) the Dataset one.
- ``mlflow.note.content`` is the run's description (markdown): the parent's holds the command
  line that started the sweep (credentials redacted: `orchestrator.cluster.security.redact_command`).

Nothing here talks to MLflow: the values go through `orchestrator.tracking.ops`' operations, so
outage replay and ``--sync-mlflow`` write them too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.tracking.tags import (
    FAMILY_TAG,
    GIT_COMMIT_TAG,
    METHOD_TAG,
    NOTE_TAG,
    RUN_COLOR_TAG,
    SOURCE_NAME_TAG,
    SOURCE_TYPE_TAG,
    SPACE_TAG,
    SWEEP_NAME_TAG,
    SWEPT_TAG,
    VARIANT_TAG,
)
from orchestrator.tracking.views import view_key, view_state, view_tag
from trainables.config import VARIANT_KEY, family_of, method_short_keys

if TYPE_CHECKING:
    from search_spaces import Plan

SOURCE_NAME = "python -m orchestrator.sweep"


#: Short names of swept keys in run names (any other key: its last part, or the whole key
#: when two swept keys would share it). method.* keys: each method card's `short_keys`.
SHORT_KEYS: dict[str, str] = {
    "optim.lr": "lr", "optim.weight_decay": "wd",
    "optim.momentum": "mom", "optim.name": "opt", "data.batch_size": "bs", "data.dataset": "data",
    "model.name": "model", "schedule.name": "sched", "schedule.warmup_epochs": "warmup",
    "run.seed": "seed",
}
#: Distinct, colour-blind-friendlier colours (matplotlib's tab10) for the n-th trial.
RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf")


# --------------------------------------------------------------------------- values


def param_text(value: Any) -> str:
    """The one text form of a param value: what `str` gives for Python values (so sweeps logged
    before stay equal), numpy/torch scalars unwrapped, tuples as the CLI takes them back."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and value == 0:
        return "0.0"  # no "-0.0"
    return value if isinstance(value, str) else str(value)


def _short_value(value: Any, digits: int | None) -> str:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        if digits is not None:
            return f"{value:.{digits}g}"
        text = f"{value:g}"
        return text if math.isfinite(value) and float(text) == value else repr(value)
    if isinstance(value, (tuple, list)):
        return "-".join(_short_value(v, digits) for v in value)
    return str(value)


def method_label(flat: Mapping[str, Any]) -> str:
    """ep, soft_iep / hard_iep, dense, dense_lrr, dst, imp."""
    name = str(flat.get("method.name", ""))
    if name == "edge_popup":
        return "ep"
    if name == "iep":
        return f"{flat.get('method.pruning', 'soft')}_iep"
    return name


def trial_note(flat: Mapping[str, Any], result: Mapping[str, Any] | None = None) -> str:
    """A child run's description, one line: method, cycles or rounds, density, final test
    accuracy ("running" before the trial's last report)."""
    name = str(flat.get("method.name", ""))
    parts = [method_label(flat)]
    count, unit = (flat.get("method.rounds"), "rounds") if name == "imp" else (flat.get("method.cycles"), "cycles")
    if isinstance(count, int | float) and count > 1:
        parts.append(f"{int(count)} {unit}")
    r = result or {}
    density = r.get("density")
    if density is None:
        if name == "dense":
            density = 1.0
        elif name == "dst":
            density = flat.get("method.density")
        elif name == "edge_popup" and isinstance(flat.get("method.prune_rate"), int | float):
            density = 1 - float(flat["method.prune_rate"])
    if isinstance(density, int | float):
        parts.append(f"density {density:.3g}")
    acc = r.get("test_acc")
    parts.append(f"final test accuracy {acc:.4f}" if isinstance(acc, int | float) else "running")
    return ", ".join(parts)


def trial_number(trial_id: str) -> int | None:
    """Tune's trial ids end in the trial's number in the sweep: ``78baa_00003`` -> 3."""
    tail = str(trial_id).rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


# --------------------------------------------------------------------------- the sweep's labels


@dataclass(frozen=True)
class SweepLabels:
    """Names and tags of one sweep's runs, derived from its plan; picklable (Tune keeps it in
    tuner.pkl with the callback), so a restored sweep names its runs the same way."""

    sweep_name: str
    space: str
    search: str = "grid"
    swept: tuple[str, ...] = ()  # dotted keys the trials differ in ("variant": a named variant)
    short: tuple[tuple[str, str], ...] = ()  # swept key -> its name in run names
    numbered: bool = False  # names end in "#N" (Optuna, or a grid whose names would repeat)
    families: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    commit: str | None = None

    @classmethod
    def from_plan(cls, plan: Plan, sweep_name: str) -> SweepLabels:
        swept = [VARIANT_KEY] if plan.variants else []  # a variant's name says most
        swept += [k for k in plan.grid if k != "run.seed"]
        swept += [k for k in plan.optuna_space if k not in swept]
        configs = plan.trial_configs()
        flats = [c.to_flat() for c in configs]
        names = {str(f["method.name"]) for f in flats}
        methods = sorted({method_label(f) for f in flats})
        if "method.name" in swept:
            swept.remove("method.name")  # the run name starts with the method anyway
        labels = cls(sweep_name=sweep_name, space=plan.space.name, search=plan.search,
                     swept=tuple(swept), short=tuple(_short_names(swept).items()),
                     numbered=plan.search != "grid",
                     families=tuple(sorted({family_of(m) for m in names})),
                     methods=tuple(methods), commit=_git_commit())
        if plan.search == "grid":
            points = plan.points()
            names = [labels.run_name(p, f) for p, f in zip(points, flats, strict=True)]
            if len(set(names)) < len(names):  # e.g. a grid axis listing one value twice
                labels = dataclasses.replace(labels, numbered=True)
        return labels

    # ------------------------------------------------------------------ trials

    def run_name(self, config: Mapping[str, Any], flat: Mapping[str, Any],
                 trial_id: str = "") -> str:
        """``<method>/<variant>/<k>=<v>/.../seed=<s>`` (``#N`` appended when numbered)."""
        short = dict(self.short)
        digits = 3 if self.search != "grid" else None  # Optuna's samples: 3 significant digits
        parts = [method_label(flat)]
        for key in self.swept:
            if key == VARIANT_KEY:
                if config.get(VARIANT_KEY) is not None:
                    parts.append(str(config[VARIANT_KEY]))
                continue
            value = flat.get(key, config.get(key))
            parts.append(f"{short.get(key, key)}={_short_value(value, digits)}")
        parts.append(f"seed={flat.get('run.seed', config.get('run.seed', 0))}")
        name = "/".join(parts)
        number = trial_number(trial_id) if trial_id else None
        if self.numbered and number is not None:
            name += f" #{number}"
        return name

    def trial_tags(self, flat: Mapping[str, Any], trial_id: str = "",
                   config: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Family, method, variant, space, sweep, swept keys, source, colour and description
        (`trial_note`, until the trial ends) of a trial's run."""
        method = str(flat.get("method.name", ""))
        tags = {FAMILY_TAG: family_of(method), METHOD_TAG: method_label(flat), SPACE_TAG: self.space,
                SWEEP_NAME_TAG: self.sweep_name, SWEPT_TAG: ",".join(self.swept),
                SOURCE_NAME_TAG: SOURCE_NAME, SOURCE_TYPE_TAG: "LOCAL", NOTE_TAG: trial_note(flat)}
        if config is not None and config.get(VARIANT_KEY) is not None:
            tags[VARIANT_TAG] = str(config[VARIANT_KEY])
        if self.commit:
            tags[GIT_COMMIT_TAG] = self.commit
        number = trial_number(trial_id) if trial_id else None
        if number is not None:
            tags[RUN_COLOR_TAG] = RUN_COLORS[number % len(RUN_COLORS)]
        return tags

    # ------------------------------------------------------------------ the parent

    def parent_run_name(self, n_trials: int | None = None) -> str:
        """The sweep's name (with its space when the name lacks it) and what it sweeps."""
        name = self.sweep_name if self.space in self.sweep_name else f"{self.space}/{self.sweep_name}"
        axes = ", ".join(dict(self.short).get(k, k) for k in self.swept)
        what = [self.search] + ([axes] if axes else []) + ([f"{n_trials} trials"] if n_trials else [])
        return f"{name} ({'; '.join(what)})"

    def parent_tags(self) -> dict[str, str]:
        tags = {FAMILY_TAG: ",".join(self.families), METHOD_TAG: ",".join(self.methods),
                SPACE_TAG: self.space, SWEEP_NAME_TAG: self.sweep_name, SWEPT_TAG: ",".join(self.swept),
                SOURCE_NAME_TAG: SOURCE_NAME, SOURCE_TYPE_TAG: "LOCAL"}
        if self.commit:
            tags[GIT_COMMIT_TAG] = self.commit
        return tags

    def parent_note(self, command: str, plan: Plan | None = None, view_link: str = "") -> str:
        """The parent run's description (markdown): the command line, then what it sweeps."""
        lines = ["Started with:", "", "```", command or "(command line not recorded)", "```", ""]
        if view_link:
            lines += [f"[This sweep's runs, swept params and metrics as columns]({view_link})", ""]
        if plan is not None:
            lines.append(f"Space `{plan.space.name}`: {plan.space.description}"
                         + (f" ({plan.space.paper})" if plan.space.paper else ""))
            lines.append("")
            if plan.search == "grid":
                for key, values in plan.grid.items():
                    lines.append(f"- `{key}`: {', '.join(_short_value(v, None) for v in values)}")
                if plan.variants:
                    lines.append(f"- variants: {', '.join(plan.variants)}")
                lines.append(f"- {len(plan.points())} trial(s)")
            else:
                for key, dist in plan.optuna_space.items():
                    lines.append(f"- `{key}`: {dist}")
                lines.append(f"- {plan.num_samples} Optuna trial(s)")
        return "\n".join(lines)


    # ------------------------------------------------------------------ a saved view

    def view_key(self) -> str:
        """The share key of this sweep's saved view of the runs table (see `shared_view`)."""
        return view_key(self.sweep_name)

    def shared_view(self, metric: str, mode: str) -> tuple[str, str]:
        """(experiment tag, value) of this sweep's saved view of the runs table, which MLflow's
        UI opens from ``#/experiments/ID/runs?viewStateShareKey=KEY`` (`views.view_url`): its
        trials only, sorted by its metric, method, test accuracy, density and dying ratio
        first, then the swept params; charts of accuracy against density and per cycle."""
        params = [k for k in self.swept if k != VARIANT_KEY]
        extra = ("itop",) if "dst" in self.families else ()  # DST's exploration (its dying ratio: 1 - itop)
        return view_tag(self.view_key(), view_state(self.sweep_name, metric, mode, params, extra))


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    short = {**method_short_keys(), **SHORT_KEYS}
    out = {k: short.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    taken: dict[str, int] = {}
    for name in out.values():
        taken[name] = taken.get(name, 0) + 1
    return {k: (k if taken[v] > 1 else v) for k, v in out.items()}


# --------------------------------------------------------------------------- dataset input

# Files larger than this are fingerprinted by name and size, smaller ones by their bytes.
_HASH_BYTES_UP_TO = 8 << 20
_DATASET_CACHE: dict[tuple[Any, ...], dict[str, str]] = {}


def dataset_input(flat: Mapping[str, Any]) -> dict[str, str]:
    """The trial's training data as an MLflow dataset (JSON-able: name, digest, source_type,
    source, profile), from its data config: the Dataset column of the runs table.

    The digest fingerprints what the data is: dataset, resize, and each data file's name and
    size (and bytes, for files up to 8 MiB: the bundled digits, small tables), so two sweeps on
    the same files share one dataset entry. Computed once per data config in a process.
    """
    key = (flat.get("data.dataset"), flat.get("data.data_dir"), flat.get("data.resize"),
           flat.get("data.download"))
    if key not in _DATASET_CACHE:
        _DATASET_CACHE[key] = _dataset_input(flat)
    return dict(_DATASET_CACHE[key])


def _data_files(flat: Mapping[str, Any]) -> tuple[str, list[Path]]:
    """(uri of the data, its files) without reading them."""
    from trainables.config import DATASETS, DataConfig
    from trainables.data import data_root, expected_files

    dataset = str(flat.get("data.dataset", "digits"))
    if dataset == "digits":
        import sklearn.datasets

        path = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
        return path.as_uri(), [path] if path.is_file() else []
    cfg = DataConfig(dataset=dataset, data_dir=str(flat.get("data.data_dir") or ""),
                     download=bool(flat.get("data.download", False)))
    root = data_root(cfg).resolve()
    if DATASETS[dataset].streamed:
        return root.as_uri(), []
    files = [next((p for p in alts if p.is_file()), alts[0]) for alts in expected_files(dataset, root)]
    found = [p for p in files if p.is_file()]
    where = found[0] if len(found) == 1 else root
    return where.as_uri(), found


def _dataset_input(flat: Mapping[str, Any]) -> dict[str, str]:
    from trainables.config import DATASETS

    dataset = str(flat.get("data.dataset", "digits"))
    resize = int(flat.get("data.resize") or 0)
    uri, files = _data_files(flat)
    h = hashlib.sha256(json.dumps([dataset, resize]).encode())
    for path in sorted(files):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        if size <= _HASH_BYTES_UP_TO:
            h.update(path.read_bytes())
    spec = DATASETS.get(dataset)
    profile = {"train_size": spec.train_size, "num_classes": spec.num_classes,
               "image_size": resize or spec.image_size, "channels": spec.channels} if spec else {}
    return {"name": dataset if not resize else f"{dataset}@{resize}px", "digest": h.hexdigest()[:16],
            "source_type": "local", "source": json.dumps({"uri": uri}), "profile": json.dumps(profile),
            "context": "training"}


# --------------------------------------------------------------------------- mask figure

# `MASK_FIGURE` and `render_mask_figure` live in `trainables.mask_figure`: a trial draws its
# figure into its final checkpoint; the driver draws it only for checkpoints without one (`--sync-mlflow`, a trial stopped before its last epoch, an older checkpoint).

def mask_files(kept: Sequence[tuple[str, str]]) -> tuple[str | None, list[tuple[int, str]]]:
    """The final mask and the per-cycle masks among files uploaded from a checkpoint
    (`checkpoint_files` + `Spool.keep_files`: (local path, artifact path))."""
    final: str | None = None
    cycles: list[tuple[int, str]] = []
    for path, artifact_path in kept:
        p = Path(path)
        if p.is_file() and p.name == "masks.parquet" and artifact_path == "masks":
            final = str(p)
        elif p.is_dir() and (p / "masks").is_dir():
            for f in sorted((p / "masks").glob("cycle_*.parquet")):
                number = f.stem.removeprefix("cycle_")
                if number.isdigit():
                    cycles.append((int(number), str(f)))
    return final, cycles
