"""Typed experiment config: one tree of dataclasses, validated, hashable, flat <-> nested.

Every knob lives here once. The CLI (`--set a.b=c`), the search spaces and the MLflow
params all use the same dotted keys, produced by `to_flat` and read back by `from_flat`.
The `method` group is polymorphic: `method.name` picks the dataclass that holds the other
`method.*` keys, so a key that belongs to another method is an error, not a silent no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import KeysView, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trainables.config.cards import METHODS
from trainables.config.catalog import DATASETS, model_input_error
from trainables.config.groups import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    SparsityConfig,
)
from trainables.config.methods import EdgePopupConfig, MethodConfig
from trainables.config.schema import (
    ConfigError,
    check_constraints,
    coerce,
    field_types,
    replace_group,
    unknown_key_message,
)


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    method: MethodConfig = field(default_factory=EdgePopupConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)  # mask pattern of every sparse method

    GROUPS: ClassVar[tuple[str, ...]] = ("data", "model", "optim", "schedule", "method", "run", "sparsity")

    @property
    def total_epochs(self) -> int:
        """Epochs over all cycles: what the last report's `epoch` reaches."""
        return self.method.cycle_count() * self.schedule.epochs

    # ----- flat view -------------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        """Dotted keys -> plain values (tuples stay tuples), in declaration order."""
        flat: dict[str, Any] = {}
        for group in self.GROUPS:
            for f in dataclasses.fields(getattr(self, group)):
                flat[f"{group}.{f.name}"] = getattr(getattr(self, group), f.name)
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> ExperimentConfig:
        """Build and validate a config from dotted keys; missing keys take defaults."""
        return cls().with_overrides(flat)

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        """A new validated config with dotted-key overrides; values may be strings (CLI)."""
        groups: dict[str, dict[str, Any]] = {g: {} for g in self.GROUPS}
        for key, value in overrides.items():
            group, _, name = str(key).partition(".")
            if group not in groups or not name or "." in name:
                raise ConfigError(unknown_key_message(str(key), self._allowed_keys(overrides)))
            groups[group][name] = value
        method = self.method
        if "name" in groups["method"]:
            new_name = coerce("method.name", groups["method"]["name"], str)
            if new_name not in METHODS:
                raise ConfigError(f"method.name: {new_name!r} is not one of {', '.join(METHODS)}")
            if new_name != method.name:
                method = METHODS[new_name]()
        parts: dict[str, Any] = {}
        for group in self.GROUPS:
            current = method if group == "method" else getattr(self, group)
            parts[group] = replace_group(group, current, groups[group], self._allowed_keys(overrides))
        cfg = ExperimentConfig(**parts)
        cfg.validate()
        return cfg

    def _allowed_keys(self, overrides: Mapping[str, Any]) -> list[str]:
        name = overrides.get("method.name", self.method.name)
        method_cls = METHODS.get(str(name), type(self.method))
        keys = []
        for group in self.GROUPS:
            dc = method_cls if group == "method" else type(getattr(self, group))
            keys += [f"{group}.{f.name}" for f in dataclasses.fields(dc)]
        return keys

    @classmethod
    def coerce(cls, key: str, value: Any) -> Any:
        """Type one value for `key` (CLI string -> declared type) without cross-field checks."""
        group, _, name = key.partition(".")
        if group == "method":
            dcs: list[type] = list(METHODS.values())
        elif group in cls.GROUPS:
            dcs = [type(getattr(cls(), group))]
        else:
            dcs = []
        for dc in dcs:
            hints = field_types(dc)
            if name in hints and name in {f.name for f in dataclasses.fields(dc)}:
                return coerce(key, value, hints[name])
        raise ConfigError(unknown_key_message(key, cls()._allowed_keys({})))

    # ----- identity ----------------------------------------------------------------------
    def non_default(self) -> dict[str, Any]:
        """Flat keys whose value differs from the default (method defaults of its own class)."""
        default = ExperimentConfig(method=METHODS[self.method.name]()).to_flat()
        flat = self.to_flat()
        diff = {k: v for k, v in flat.items() if default.get(k) != v}
        diff["method.name"] = self.method.name
        return diff

    def hash(self) -> str:
        """Stable name of the experiment: adding a knob with a default keeps old hashes."""
        payload = json.dumps(self.non_default(), sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps({g: dataclasses.asdict(getattr(self, g)) for g in self.GROUPS}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        nested = json.loads(text)
        return cls.from_flat({f"{g}.{k}": v for g, d in nested.items() for k, v in d.items()})

    # ----- validation --------------------------------------------------------------------
    def validate(self) -> None:
        """Field constraints plus the cross-field rules; raises ConfigError."""
        for group in self.GROUPS:
            obj = getattr(self, group)
            for f in dataclasses.fields(obj):
                check_constraints(f"{group}.{f.name}", getattr(obj, f.name), f.metadata)
        spec = DATASETS[self.data.dataset]
        if self.schedule.warmup_epochs >= self.schedule.epochs and self.schedule.warmup_epochs > 0:
            raise ConfigError(
                f"schedule.warmup_epochs: {self.schedule.warmup_epochs} must be smaller than "
                f"schedule.epochs ({self.schedule.epochs})")
        if any(m < 1 or m >= self.schedule.epochs for m in self.schedule.milestones):
            raise ConfigError(f"schedule.milestones: {list(self.schedule.milestones)} must lie in "
                              f"[1, schedule.epochs={self.schedule.epochs}) to take effect")
        if self.data.batch_size > spec.train_size:
            raise ConfigError(f"data.batch_size: {self.data.batch_size} is larger than the "
                              f"{spec.train_size} training images of {self.data.dataset}")
        if self.schedule.name == "step" and not (self.schedule.milestones or self.schedule.milestone_fractions):
            raise ConfigError("schedule.milestones: the step schedule needs at least one milestone, e.g. 50,75")
        if any(not 0 < f < 1 for f in self.schedule.milestone_fractions):
            raise ConfigError(f"schedule.milestone_fractions: {list(self.schedule.milestone_fractions)} "
                              f"must lie in (0, 1)")
        if self.schedule.milestones and self.schedule.milestone_fractions:
            raise ConfigError("schedule.milestone_fractions: set milestones or milestone_fractions, not both")
        if any(h < 1 for h in self.model.mlp_hidden):
            raise ConfigError(f"model.mlp_hidden: sizes must be >= 1, got {list(self.model.mlp_hidden)}")
        problem = model_input_error(self.model.name, self.model.width, self.data.dataset, self.data.resize)
        if problem:
            raise ConfigError(problem)
        self.method.validate(self)
        self.sparsity.validate(self)
        if not spec.bundled and not self.data.data_dir and not self.data.download:
            raise ConfigError(
                f"data.data_dir: dataset {self.data.dataset} is read from a directory; set "
                f"data.data_dir=PATH (or data.download=true to fetch it)")


# ----- helpers ---------------------------------------------------------------------------

VARIANT_KEY = "variant"


def resolve_tune_config(tune_config: Mapping[str, Any],
                        variants: Mapping[str, Mapping[str, Any]]) -> ExperimentConfig:
    """A trial's flat config (dotted keys, maybe a named variant of a space) -> validated config.

    The one place that reads a trial's config: the trial, the tracker and the sweep's
    dry run and results all call it, so they cannot disagree.
    """
    flat = {k: v for k, v in tune_config.items() if k != VARIANT_KEY}
    name = tune_config.get(VARIANT_KEY)
    if name is not None:
        if name not in variants:
            raise ConfigError(f"variant: {name!r} is not one of {', '.join(variants) or 'none'}")
        flat.update(variants[name])
    return ExperimentConfig.from_flat(flat)


def describe_keys(cfg: ExperimentConfig | None = None) -> list[tuple[str, Any, str]]:
    """(key, default, help) for every key of every method, for `--help-config`."""
    cfg = cfg or ExperimentConfig()
    rows: list[tuple[str, Any, str]] = []
    for group in ExperimentConfig.GROUPS:
        if group == "method":
            seen: set[str] = set()
            for mname, mcls in METHODS.items():
                for f in dataclasses.fields(mcls):
                    if f.name == "name" and "name" in seen:
                        continue
                    seen.add(f.name)
                    helptext = _help(f)
                    if f.name == "name":
                        rows.append(("method.name", cfg.method.name, f"method: one of {', '.join(METHODS)}"))
                    else:
                        rows.append((f"method.{f.name}", f.default, f"[{mname}] {helptext}"))
            continue
        obj = getattr(cfg, group)
        for f in dataclasses.fields(obj):
            rows.append((f"{group}.{f.name}", getattr(obj, f.name), _help(f)))
    return rows


def _help(f: dataclasses.Field) -> str:
    """A key's help; a registry's names (models, datasets, criteria: plugins add to them) listed."""
    text = f.metadata.get("help", "")
    choices = f.metadata.get("choices")
    return f"{text} (one of {', '.join(choices)})" if isinstance(choices, KeysView) else text
