"""Search spaces as files: `--space path/to/space.yaml` (or `.toml`), the fields of `SearchSpace`.

    name: criteria_digits                 # required, a plain name
    description: my criterion against magnitude and SNIP    # required
    paper: ""                             # optional, like metric (test_acc) and mode (max)
    base:     {data.dataset: digits, method.name: dst}
    grid:     {method.criterion: [magnitude, snip], method.density: [0.1, 0.2]}
    variants: {static: {method.update_period: 0}}
    optuna:
      optim.lr:         {type: float, low: 0.01, high: 0.5, log: true}
      schedule.epochs:  {type: int, low: 1, high: 5, step: 1}
      method.criterion: {type: categorical, choices: [magnitude, snip]}

Keys are the dotted config keys of `--list-keys`; nested tables are joined with dots, so
TOML's `data.dataset = "digits"` (a nested table) and YAML's `data: {dataset: digits}` both
mean `data.dataset`. Every key and value is checked against the config tree when the file is
read, so a typo stops the sweep before anything starts. `space_to_dict` writes a space back
(a built-in one as a starting point; a test checks both ways give the same trials).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search_spaces.base import SearchSpace
from trainables.config import VARIANT_KEY, ConfigError, ExperimentConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".toml")
FIELDS: tuple[str, ...] = ("name", "description", "paper", "base", "grid", "variants", "optuna", "metric",
                           "mode")
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {  # type -> the fields it takes
    "float": ("low", "high", "log", "step"),
    "int": ("low", "high", "log", "step"),
    "categorical": ("choices",),
}


def is_space_file(value: str) -> bool:
    """--space names a file (by its suffix or a path separator) rather than a registered space."""
    return value.endswith(SUFFIXES) or "/" in value


def load_space_file(path: str | Path) -> SearchSpace:
    """Read and check a space file; raises ConfigError naming the file and the bad field."""
    path = Path(path)
    where = f"--space {path}"
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"{where}: a space file ends in {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise ConfigError(f"{where}: no such file")
    text = path.read_text()
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where}: not valid {path.suffix.lstrip('.').upper()}: {first}") from None
    try:
        return space_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def space_from_dict(raw: Any) -> SearchSpace:
    """A `SearchSpace` from plain data (a parsed file); every key checked against the config."""
    if not isinstance(raw, Mapping):
        raise ConfigError("expected a table of fields: " + ", ".join(FIELDS))
    unknown = [k for k in raw if k not in FIELDS]
    if unknown:
        raise ConfigError(f"unknown field {unknown[0]!r}; fields: {', '.join(FIELDS)}")
    for required in ("name", "description"):
        if not isinstance(raw.get(required), str) or not raw[required].strip():
            raise ConfigError(f"{required}: required, a non-empty string")
    name = raw["name"].strip()
    if "/" in name or name.startswith(".") or name.endswith(SUFFIXES):
        raise ConfigError(f"name: {name!r} must be a plain name (no '/', no file suffix)")
    for key in ("paper", "metric", "mode"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{key}: expected a string, got {raw[key]!r}")
    if raw.get("mode", "max") not in ("max", "min"):
        raise ConfigError(f"mode: {raw['mode']!r} is not one of max, min")
    base = {k: _check_value(f"base.{k}", k, v) for k, v in _flatten(raw.get("base"), "base").items()}
    grid: dict[str, tuple[Any, ...]] = {}
    for key, values in _flatten(raw.get("grid"), "grid").items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: expected a non-empty list of values, got {values!r}")
        grid[key] = tuple(_check_value(f"grid.{key}", key, v) for v in values)
    variants: dict[str, dict[str, Any]] = {}
    raw_variants = raw.get("variants") or {}
    if not isinstance(raw_variants, Mapping):
        raise ConfigError(f"variants: expected a table of named points, got {raw_variants!r}")
    for vname, point in raw_variants.items():
        variants[str(vname)] = {k: _check_value(f"variants.{vname}.{k}", k, v)
                                for k, v in _flatten(point, f"variants.{vname}").items()}
    optuna_space = {key: _distribution(key, spec)
                    for key, spec in _flatten(raw.get("optuna"), "optuna", stop_at="type").items()}
    return SearchSpace(name=name, description=raw["description"].strip(), paper=raw.get("paper", ""),
                       base=base, grid=grid, variants=variants, optuna=optuna_space,
                       metric=raw.get("metric", "test_acc"), mode=raw.get("mode", "max"))


def _flatten(table: Any, where: str, *, stop_at: str | None = None, prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted keys (a table holding `stop_at` is a leaf: an Optuna distribution)."""
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table of config keys, got {table!r}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and (stop_at is None or stop_at not in value):
            out.update(_flatten(value, where, stop_at=stop_at, prefix=f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _check_value(where: str, key: str, value: Any) -> Any:
    """The value typed for `key` (a list for a tuple-valued key stays a list of values)."""
    if key == VARIANT_KEY:
        raise ConfigError(f"{where}: 'variant' is reserved for the space's named variants")
    try:
        return ExperimentConfig.coerce(key, value)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _distribution(key: str, spec: Any) -> optuna.distributions.BaseDistribution:
    where = f"optuna.{key}"
    if not isinstance(spec, Mapping) or spec.get("type") not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: expected a table with type = one of {', '.join(DISTRIBUTIONS)}, "
                          f"got {spec!r}")
    kind = spec["type"]
    extra = [k for k in spec if k != "type" and k not in DISTRIBUTIONS[kind]]
    if extra:
        raise ConfigError(f"{where}: {kind} takes {', '.join(DISTRIBUTIONS[kind])}, not {extra[0]!r}")
    try:
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: categorical needs a non-empty list of choices")
            dist: optuna.distributions.BaseDistribution = CategoricalDistribution(
                [_check_value(where, key, c) for c in choices])
        else:
            if "low" not in spec or "high" not in spec:
                raise ConfigError(f"{where}: {kind} needs low and high")
            cls = FloatDistribution if kind == "float" else IntDistribution
            log = spec.get("log", False)
            if not isinstance(log, bool):
                raise ConfigError(f"{where}: log is true or false, got {log!r}")
            low, high = _check_value(where, key, spec["low"]), _check_value(where, key, spec["high"])
            step = spec.get("step", None if kind == "float" else 1)
            dist = cls(low, high, log=log, step=step)
    except ValueError as e:  # Optuna's own checks: low > high, log with step, log with low <= 0
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from None
    return dist


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    """Plain data (YAML/TOML-ready) for a space: what `space_from_dict` reads back."""
    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    out: dict[str, Any] = {"name": space.name, "description": space.description}
    if space.paper:
        out["paper"] = space.paper
    out["metric"], out["mode"] = space.metric, space.mode
    if space.base:
        out["base"] = {k: plain(v) for k, v in space.base.items()}
    if space.grid:
        out["grid"] = {k: [plain(x) for x in v] for k, v in space.grid.items()}
    if space.variants:
        out["variants"] = {n: {k: plain(v) for k, v in p.items()} for n, p in space.variants.items()}
    if space.optuna:
        out["optuna"] = {k: _dist_to_dict(d) for k, d in space.optuna.items()}
    return out


def _dist_to_dict(dist: optuna.distributions.BaseDistribution) -> dict[str, Any]:
    if isinstance(dist, CategoricalDistribution):
        return {"type": "categorical", "choices": [list(c) if isinstance(c, tuple) else c for c in dist.choices]}
    kind = "float" if isinstance(dist, FloatDistribution) else "int"
    out: dict[str, Any] = {"type": kind, "low": dist.low, "high": dist.high}
    if dist.log:
        out["log"] = True
    if dist.step is not None and not (kind == "int" and dist.step == 1):
        out["step"] = dist.step
    return out
