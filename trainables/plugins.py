"""The plugin interface: what a package outside sparsesweep can add, and how it is loaded.

A plugin is a module that declares the interface version it was written for and a
`register(api)` function:

    SPARSESWEEP_PLUGIN_API = 1

    def register(api):
        api.criterion("taylor2", taylor2_scores, needs_grad=True,
                      params={"alpha": Param(float, 0.5, "weight of the second-order term", ge=0)})
        api.space(MY_SPACE)

It is found by its entry point (group `sparsesweep.plugins` in the plugin package's
pyproject.toml, discovered at start-up) or named with `--plugin module.path`. Registered items
are the built-ins' peers: config keys, choices, validation, spaces, MLflow params and the
report read the same tables. What can go wrong (an import error, another interface version,
a name already taken, a parameter without a type) raises `PluginError`: one line naming the
plugin and the problem; the CLI exits 2 before anything starts. Nothing replaces a built-in.

Trials load the same plugins in their own process (`load_plugins` with the names the driver
passes on; entry points are found there too), and a config whose class a plugin extended
pickles as "load these plugins, then build it", so it crosses processes as built-ins do.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from trainables.config import (
    DATASETS,
    METHODS,
    ConfigError,
    DatasetSpec,
    MethodCard,
    ModelSpec,
    param,
    register_method,
)
from trainables.config.cards import extend_method_config
from trainables.config.methods import CRITERION_NAMES, GROWTH_NAMES
from trainables.config.schema import check_constraints, coerce

PLUGIN_API_VERSION = 1
VERSION_ATTRIBUTE = "SPARSESWEEP_PLUGIN_API"
ENTRY_POINT_GROUP = "sparsesweep.plugins"
ENV_VAR = "SPARSESWEEP_PLUGINS"  # --plugin modules, comma-separated, for processes the driver starts
PARAM_TYPES: tuple[type, ...] = (int, float, bool, str)

LOADED: dict[str, str] = {}  # module -> where it was found ("entry point <dist>", "--plugin")


class PluginError(ConfigError):
    """A plugin refused at load: the message is one line naming the plugin and the problem."""


@dataclass(frozen=True)
class Param:
    """A typed parameter of a plugin's criterion or growth rule; it becomes the config key
    `method.<rule>_<name>` of DST (so --set, --grid, Optuna and MLflow see it)."""

    type: type | None = None  # int, float, bool or str: required
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None


class PluginAPI:
    """What `register(api)` is handed: one method per kind of thing a plugin adds."""

    version = PLUGIN_API_VERSION

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin

    def _fail(self, message: str) -> PluginError:
        return PluginError(f"plugin {self.plugin}: {message}")

    # ----- dynamic sparse training ----------------------------------------------------
    def criterion(self, name: str, score: Callable[..., Any], *, needs_grad: bool,
                  params: Mapping[str, Param] | None = None) -> None:
        """A DST prune criterion: `score(weight, grad, active, *, generator, **params) -> Tensor`
        of weight's shape; the LOWEST-scoring active weights are pruned. `grad` is ∂L/∂θ (None
        unless `needs_grad`); `active` is the bool mask; `generator` seeds any randomness."""
        from trainables.sparse.dst_criteria import EXTRA_CRITERIA, ScoreRule

        names = self._rule("criterion", name, score, CRITERION_NAMES, params or {})
        CRITERION_NAMES[name] = self.plugin
        EXTRA_CRITERIA[name] = ScoreRule(name, score, bool(needs_grad), names)

    def growth(self, name: str, score: Callable[..., Any], *, needs_grad: bool,
               params: Mapping[str, Param] | None = None) -> None:
        """A DST growth rule: `score(effective_grad, inactive, *, generator, **params) -> Tensor`
        of the mask's shape; the HIGHEST-scoring inactive weights are grown. `effective_grad`
        is ∂L/∂(m⊙θ) (None unless `needs_grad`)."""
        from trainables.sparse.dst_criteria import EXTRA_GROWTH, ScoreRule

        names = self._rule("growth", name, score, GROWTH_NAMES, params or {})
        GROWTH_NAMES[name] = self.plugin
        EXTRA_GROWTH[name] = ScoreRule(name, score, bool(needs_grad), names)

    def _rule(self, kind: str, name: str, score: Callable[..., Any], taken: Mapping[str, str],
              params: Mapping[str, Param]) -> tuple[str, ...]:
        """Check a criterion / growth rule and add its parameters to DST's config."""
        if not isinstance(name, str) or not name.isidentifier():
            raise self._fail(f"{kind} name {name!r} must be an identifier (it prefixes its config keys)")
        if name in taken:
            raise self._fail(_taken(kind, name, taken[name]))
        if not callable(score):
            raise self._fail(f"{kind} {name}: score must be a function, got {type(score).__name__}")
        fields = []
        for pname, spec in params.items():
            where = f"{kind} {name}: parameter {pname!r}"
            if not isinstance(spec, Param):
                raise self._fail(f"{where} must be a Param(type, default, help), got {type(spec).__name__}")
            if spec.type is None:
                raise self._fail(f"{where} declares no type (one of int, float, bool, str)")
            if spec.type not in PARAM_TYPES:
                raise self._fail(f"{where}: type {spec.type!r} is not one of int, float, bool, str")
            key = f"method.{name}_{pname}"
            try:
                default = coerce(key, spec.default, spec.type)
                meta = {"choices": spec.choices, "ge": spec.ge, "gt": spec.gt, "le": spec.le, "lt": spec.lt}
                check_constraints(key, default, meta)
            except ConfigError as e:
                raise self._fail(f"{where}: default {e}") from None
            help_text = f"[{kind} {name}] {spec.help}".rstrip()
            fields.append((f"{name}_{pname}", spec.type,
                           param(default, help_text, choices=spec.choices, ge=spec.ge, gt=spec.gt,
                                 le=spec.le, lt=spec.lt)))
        if fields:
            try:
                extend_method_config("dst", fields, _rebuild_reducer)
            except ValueError as e:
                raise self._fail(f"{kind} {name}: {e}") from None
        return tuple(params)

    # ----- methods, models, datasets, spaces ------------------------------------------------
    def method(self, name: str, config: type, method: type, *, family: str, label: str,
               short_keys: Mapping[str, str] | None = None) -> None:
        """A whole method: a frozen MethodConfig dataclass (its `name` field defaults to `name`)
        and a `Method` subclass that trains through the engine's hooks."""
        from trainables.methods.base import Method

        if not (isinstance(method, type) and issubclass(method, Method)):
            raise self._fail(f"method {name}: {method!r} is not a subclass of trainables.methods.base.Method")
        if not (isinstance(config, type) and issubclass(config, method.config_class)):
            raise self._fail(f"method {name}: {method.__name__}.config_class is "
                             f"{method.config_class.__name__}, which {config!r} is not")
        if name in METHODS:
            raise self._fail(_taken("method", name, _OWNERS.get(f"method:{name}", "built-in")))
        try:
            register_method(MethodCard(name, config, method, family=family, label=label,
                                       short_keys=dict(short_keys or {})))
        except ValueError as e:
            raise self._fail(str(e)) from None
        _OWNERS[f"method:{name}"] = self.plugin

    def model(self, name: str, builder: Callable[..., Any], *, spec: ModelSpec | None = None) -> None:
        """An architecture: `builder(cfg, layers) -> nn.Module`, every conv/linear/BatchNorm from
        the `LayerFactory` `layers` (so the method makes it dense, masked or a supermask);
        `trainables.models.input_shape(cfg)` gives (channels, side, classes)."""
        from trainables.config import MODEL_MIN_SIDE, MODELS
        from trainables.models import MODEL_BUILDERS

        if name in MODELS:
            raise self._fail(_taken("model", name, _OWNERS.get(f"model:{name}", "built-in")))
        if not callable(builder):
            raise self._fail(f"model {name}: builder must be a function (cfg, layers) -> nn.Module")
        spec = spec or ModelSpec()
        MODELS[name] = spec
        MODEL_MIN_SIDE[name] = spec.min_side
        MODEL_BUILDERS[name] = builder
        _OWNERS[f"model:{name}"] = self.plugin

    def dataset(self, name: str, spec: DatasetSpec, *, read: Callable[..., Any] | None = None,
                folder: Callable[..., Any] | None = None) -> None:
        """A dataset: `read(data_cfg) -> (train_x, train_y, test_x, test_y)` tensors held in
        memory, or, with `spec.streamed`, `folder(data_cfg) -> Path` of an ImageFolder tree
        (train/ and val/, one folder per class). `spec` is what validation knows before reading."""
        from trainables.data.folder import EXTRA_FOLDERS
        from trainables.data.readers import EXTRA_READERS

        if name in DATASETS:
            raise self._fail(_taken("dataset", name, _OWNERS.get(f"data:{name}", "built-in")))
        if not isinstance(spec, DatasetSpec):
            raise self._fail(f"dataset {name}: spec must be a DatasetSpec, got {type(spec).__name__}")
        if (read is None) == (folder is None) or (folder is not None) != spec.streamed:
            raise self._fail(f"dataset {name}: give read= (in memory) or folder= with "
                             f"DatasetSpec(streamed=True), exactly one")
        DATASETS[name] = spec
        if read is not None:
            EXTRA_READERS[name] = read
        else:
            EXTRA_FOLDERS[name] = folder  # type: ignore[assignment]
        _OWNERS[f"data:{name}"] = self.plugin

    def space(self, space: Any) -> None:
        """A named search space: a `search_spaces.SearchSpace`, or the path of a space file."""
        import search_spaces
        from search_spaces.files import load_space_file

        if isinstance(space, (str, Path)):
            try:
                space = load_space_file(space)
            except ConfigError as e:
                raise self._fail(str(e)) from None
        if not isinstance(space, search_spaces.SearchSpace):
            raise self._fail(f"space must be a SearchSpace or a space file, got {type(space).__name__}")
        if space.name in search_spaces.REGISTRY:
            raise self._fail(_taken("space", space.name, _OWNERS.get(f"space:{space.name}", "built-in")))
        search_spaces.REGISTRY[space.name] = space
        _OWNERS[f"space:{space.name}"] = self.plugin


_OWNERS: dict[str, str] = {}  # "model:NAME", "data:NAME", ... -> the plugin that registered it


def _taken(kind: str, name: str, owner: str) -> str:
    if owner == "built-in":
        return f"{kind} {name!r} is built in; a plugin cannot replace it (pick another name)"
    return f"{kind} {name!r} is already registered by plugin {owner}"


def _rebuild(plugins: tuple[str, ...], method: str, values: dict[str, Any]) -> Any:
    """Unpickle a config whose class plugins extended: load them here, then build it."""
    load_plugins(plugins)
    return METHODS[method](**values)


def _rebuild_reducer(obj: Any) -> tuple[Any, ...]:
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return _rebuild, (tuple(m for m, how in LOADED.items() if how == "--plugin"), obj.name, values)


# ----- loading -----------------------------------------------------------------------------

def entry_point_plugins() -> list[importlib.metadata.EntryPoint]:
    """The installed plugins: entry points of group `sparsesweep.plugins`."""
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def load_plugins(modules: Sequence[str] = (), *, entry_points: bool = True) -> list[str]:
    """Load every installed plugin (entry points) and the `modules` named with --plugin, once
    each; returns the names loaded. Raises PluginError (one line) for a bad plugin."""
    found: list[tuple[str, str, str | None]] = []  # (module, source, register attribute)
    if entry_points:
        for ep in entry_point_plugins():
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an unknown distribution"
            found.append((ep.module, f"entry point {ep.name} of {dist}", ep.attr))
    found += [(m.strip(), "--plugin", None) for m in modules if m.strip()]
    for module, source, attr in found:
        if module not in LOADED:
            _load_one(module, source, attr)
    return list(LOADED)


def modules_from_env() -> list[str]:
    """The --plugin modules the driver passed to this process (ENV_VAR)."""
    return [m for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]


def _load_one(module: str, source: str, attr: str | None) -> None:
    label = module if source == "--plugin" else f"{module} ({source})"
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # any error of the plugin's own import: one line
        raise PluginError(f"plugin {label}: cannot import it: {type(e).__name__}: "
                          f"{_first_line(e)}") from None
    version = getattr(mod, VERSION_ATTRIBUTE, None)
    if version is None:
        raise PluginError(f"plugin {label}: declares no {VERSION_ATTRIBUTE} (this sparsesweep's "
                          f"plugin API is {PLUGIN_API_VERSION})")
    if version != PLUGIN_API_VERSION:
        raise PluginError(f"plugin {label}: written for plugin API {version!r}, this sparsesweep's "
                          f"is {PLUGIN_API_VERSION}")
    register = getattr(mod, attr or "register", None)
    if not callable(register):
        raise PluginError(f"plugin {label}: has no register(api) function")
    LOADED[module] = source
    try:
        register(PluginAPI(label))
    except PluginError:
        raise
    except Exception as e:  # the plugin's own bug while registering
        raise PluginError(f"plugin {label}: register(api) failed: {type(e).__name__}: "
                          f"{_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def module_files(modules: Sequence[str]) -> list[tuple[str, Path]]:
    """(module, path) of each --plugin module as imported here: a package's folder or a
    module's file (what the cluster's workers are sent)."""
    out = []
    for name in modules:
        mod: ModuleType = sys.modules.get(name) or importlib.import_module(name)
        paths = getattr(mod, "__path__", None)
        out.append((name, Path(list(paths)[0]) if paths else Path(mod.__file__ or "")))
    return out


__all__ = ["ENTRY_POINT_GROUP", "PLUGIN_API_VERSION", "Param", "PluginAPI", "PluginError", "load_plugins"]
