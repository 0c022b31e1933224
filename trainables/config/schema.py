"""The generic schema of a config group: `param` fields, typing of CLI strings, constraints.

Nothing here knows a dataset, a model or a method; the catalog, the method configs and
`ExperimentConfig` are built from these pieces.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """Bad configuration: the message is one line naming the key and what is allowed."""


# Integers go to torch, numpy and Parquet as 64-bit: an integer key without a narrower range
# has this one. Seeds: numpy's legacy RandomState and Optuna's samplers take [0, 2**32 - 1].
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SEED_MAX = 2**32 - 1


def param(default: Any, help: str, *, choices: Collection[Any] | None = None,
          ge: float | None = None, gt: float | None = None, lt: float | None = None,
          le: float | None = None) -> Any:
    """A dataclass field with help text and the constraints `validate` enforces."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "lt": lt, "le": le}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_types(dc: type) -> dict[str, Any]:
    """Declared types of a config dataclass (annotations are strings here)."""
    return typing.get_type_hints(dc)


def replace_group(group: str, current: Any, values: dict[str, Any], allowed: list[str]) -> Any:
    if not values:
        return current
    hints = field_types(type(current))
    names = {f.name for f in dataclasses.fields(current)}
    changes = {}
    for name, value in values.items():
        key = f"{group}.{name}"
        if name not in names:
            raise ConfigError(unknown_key_message(key, allowed))
        changes[name] = coerce(key, value, hints[name])
    return dataclasses.replace(current, **changes)


def unknown_key_message(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    group = key.partition(".")[0]
    in_group = [k for k in allowed if k.partition(".")[0] == group]
    if in_group:
        return f"unknown config key {key!r}{hint}; allowed {group}.* keys: {', '.join(in_group)}"
    groups = sorted({k.partition(".")[0] for k in allowed})
    return f"unknown config key {key!r}{hint}; keys start with one of: {', '.join(groups)}"


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert a CLI string or a search-space value to the field's declared type."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return coerce(key, value, inner[0])
    if origin is tuple:
        elem = args[0]
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            items: list[Any] = [s for s in (p.strip() for p in text.split(",")) if s]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key}: expected a list of {elem.__name__}, got {value!r}")
        return tuple(coerce(key, v, elem) for v in items)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy / torch scalars from search spaces
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            out = float(value)
        else:
            try:
                out = float(str(value).strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(out):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return out
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value.strip()
    raise ConfigError(f"{key}: unsupported type {typ!r}")  # pragma: no cover - schema bug


def check_constraints(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    for item in value if isinstance(value, tuple) else (value,):
        check_number(key, item, meta)


def check_number(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Both ends of the key's range (an integer's default range: 64 bits), named in the message."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    is_int = isinstance(value, int)
    lo = meta["ge"] if meta.get("ge") is not None else meta.get("gt")
    hi = meta["le"] if meta.get("le") is not None else meta.get("lt")
    lo_b = "[" if meta.get("ge") is not None else "("
    hi_b = "]" if meta.get("le") is not None else ")"
    if is_int:  # an integer's ends are inclusive
        lo_b, hi_b = ("[" if lo is None else lo_b), ("]" if hi is None else hi_b)
        lo, hi = INT64_MIN if lo is None else lo, INT64_MAX if hi is None else hi
    allowed = f"{lo_b}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{hi_b}"
    bounds = [("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
              ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b)]
    for name, sym, ok in bounds:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key}: {value!r} must be {sym} {bound} (allowed range {allowed})")
    if is_int and not INT64_MIN <= value <= INT64_MAX:
        raise ConfigError(f"{key}: {value!r} is not a 64-bit integer (allowed range {allowed})")

