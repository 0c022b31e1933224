"""A named search space: the paper's setup, the axes of its ablation, and an Optuna space.

A space is data, not code: `base` overrides the default config, `grid` lists Cartesian axes,
`variants` names one-at-a-time points (a table whose rows each change one knob, crossed with
the grid), and `optuna` maps the same dotted keys to Optuna distributions. Every key is a key
of `trainables.config.ExperimentConfig`, so spaces, `--set` and MLflow params agree.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from trainables.config import VARIANT_KEY, ConfigError, ExperimentConfig, resolve_tune_config


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    paper: str = ""
    base: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    optuna: Mapping[str, optuna.distributions.BaseDistribution] = field(default_factory=dict)
    metric: str = "test_acc"
    mode: str = "max"

    def grid_size(self) -> int:
        n = max(1, len(self.variants))
        for values in self.grid.values():
            n *= len(values)
        return n


@dataclass(frozen=True)
class Plan:
    """A space made concrete for one sweep: what Tune gets and what a dry run prints."""

    space: SearchSpace
    search: str  # "grid" | "optuna"
    base: dict[str, Any]  # flat constants: space.base + --set
    grid: dict[str, tuple[Any, ...]]  # axes after --grid / --set pinning, seeds included
    variants: dict[str, dict[str, Any]]
    optuna_space: dict[str, optuna.distributions.BaseDistribution]
    num_samples: int

    def points(self) -> list[dict[str, Any]]:
        """Every grid trial as a Tune config (flat keys, plus `variant` when named)."""
        keys = list(self.grid)
        combos = list(itertools.product(*(self.grid[k] for k in keys))) or [()]
        names: list[str | None] = list(self.variants) or [None]
        out = []
        for name in names:
            for combo in combos:
                point = {**self.base, **dict(zip(keys, combo, strict=True))}
                if name is not None:
                    point[VARIANT_KEY] = name
                out.append(point)
        return out

    def trial_count(self) -> int:
        """Trials the sweep is made of: every grid point, or Optuna's `num_samples`."""
        return len(self.points()) if self.search == "grid" else self.num_samples

    def resolve(self, point: Mapping[str, Any]) -> ExperimentConfig:
        return resolve_tune_config(point, self.variants)

    def trial_configs(self) -> list[ExperimentConfig]:
        """All grid trials validated; for Optuna, the base plus each bound of each axis."""
        if self.search == "grid":
            return _fit_patterns([self.resolve(p) for p in self.points()])
        probes = [dict(self.base)]
        for key, dist in self.optuna_space.items():
            for value in _bounds(dist):
                probes.append({**self.base, key: value})
        return _fit_patterns([self.resolve(p) for p in probes])


def _fit_patterns(cfgs: list[ExperimentConfig]) -> list[ExperimentConfig]:
    """An N:M sparsity.pattern must tile every masked layer (needs the model: not in from_flat)."""
    from trainables.sparse.nm_fit import misfit_problem

    for cfg in cfgs:
        problem = misfit_problem(cfg)
        if problem:
            raise ConfigError(problem)
    return cfgs


def _bounds(dist: optuna.distributions.BaseDistribution) -> list[Any]:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
        return [dist.low, dist.high]
    raise ConfigError(f"unsupported Optuna distribution {type(dist).__name__}")


def pick_variants(space: SearchSpace, names: Sequence[str] | None) -> dict[str, Mapping[str, Any]]:
    """The space's named variants that `--variants` keeps (all of them without it), in its order."""
    if not names:
        return dict(space.variants)
    if not space.variants:
        raise ConfigError(f"--variants: space {space.name!r} has no named variants (it sweeps "
                          f"{', '.join(space.grid) or 'no grid axis'}; use --set/--grid)")
    unknown = [n for n in names if n not in space.variants]
    if unknown:
        raise ConfigError(f"--variants: {', '.join(map(repr, unknown))} not a variant of space {space.name!r}; "
                          f"one of {', '.join(space.variants)}")
    return {n: space.variants[n] for n in space.variants if n in names}


def make_plan(space: SearchSpace, *, search: str, sets: Mapping[str, Any],
              grid_overrides: Mapping[str, Sequence[Any]], num_samples: int,
              variants: Sequence[str] | None = None) -> Plan:
    """Combine a space with CLI input; raises ConfigError on any conflict or bad key.

    For a grid, `num_samples` > 1 repeats every point with seeds run.seed, run.seed+1, ...;
    for Optuna it is the number of trials.
    """
    if search not in ("grid", "optuna"):
        raise ConfigError(f"--search: {search!r} is not one of grid, optuna")
    if search == "optuna" and not space.optuna:
        raise ConfigError(f"--search optuna: space {space.name!r} has no Optuna space")
    if num_samples < 1:
        raise ConfigError(f"--num-samples: {num_samples} must be >= 1")
    chosen = pick_variants(space, variants)
    variant_keys = {k for v in chosen.values() for k in v}
    base = dict(space.base)
    grid = {k: tuple(v) for k, v in space.grid.items()} if search == "grid" else {}
    optuna_space = dict(space.optuna) if search == "optuna" else {}
    for key, values in grid_overrides.items():
        if search != "grid":
            raise ConfigError(f"--grid {key}: grid axes apply to --search grid only")
        if not values:
            raise ConfigError(f"--grid {key}: give at least one value")
        if key in variant_keys:
            raise ConfigError(f"--grid {key}: space {space.name!r} varies this key in its variants")
        grid[key] = tuple(values)
    if "method.name" in sets:  # another method: the space's settings of its own method do not apply
        base = {k: v for k, v in base.items() if not k.startswith("method.")}
        new_method = ExperimentConfig.from_flat({"method.name": sets["method.name"]}).method
        fields = {f"method.{f.name}" for f in dataclasses.fields(new_method)}
        swept = [*grid, *variant_keys, *optuna_space]
        foreign = sorted({k for k in swept if k.startswith("method.") and k not in fields})
        if foreign:
            raise ConfigError(f"--set method.name={new_method.name}: space {space.name!r} sweeps "
                              f"{', '.join(foreign)}, which {new_method.name} does not have")
    for key, value in sets.items():
        if search == "grid" and key in variant_keys:
            raise ConfigError(f"--set {key}: space {space.name!r} varies this key in its variants; "
                              f"drop the --set or use another space")
        grid.pop(key, None)  # --set pins a grid axis to one value
        optuna_space.pop(key, None)  # ... or removes it from the Optuna search
        base[key] = value
    typed = ExperimentConfig.from_flat(base).to_flat()  # unknown keys / bad values fail here
    base = {k: typed[k] for k in base}  # CLI strings -> typed values, as Tune and MLflow show them
    for key in optuna_space:
        ExperimentConfig.coerce(key, _bounds(optuna_space[key])[0])  # unknown key -> error
    for key, values in grid.items():
        if key == VARIANT_KEY:
            raise ConfigError("'variant' is reserved for a space's named variants")
        grid[key] = tuple(ExperimentConfig.coerce(key, v) for v in values)
    if search == "grid":
        seed0 = int(base.get("run.seed", 0))
        if num_samples > 1:
            if "run.seed" in grid:
                raise ConfigError("--num-samples: the grid already has a run.seed axis; use one or the other")
            grid["run.seed"] = tuple(range(seed0, seed0 + num_samples))
    plan = Plan(space=space, search=search, base=base, grid=grid,
                variants={k: dict(v) for k, v in chosen.items()} if search == "grid" else {},
                optuna_space=optuna_space, num_samples=num_samples if search == "optuna" else 1)
    plan.trial_configs()  # validate every trial before anything starts
    return plan
