"""Plugins on the cluster: ship the --plugin modules with the job, check every node imports them.

A `--plugin` module is not installed anywhere: it travels in Ray's runtime_env (`py_modules`,
uploaded once per job) and its name in an environment variable, so each trial process loads
it (`trainables.plugins.load_plugins`). An installed plugin (an entry point) must be installed
in the cluster's environment too. Right after connecting, one tiny task per alive node loads
every plugin the driver loaded; a node that cannot stops the sweep with one line, before any
trial starts (not after the first trial fails there).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from trainables.config import ConfigError

CHECK_TIMEOUT_S = 300.0  # a node's first task may build the runtime_env (uploads, a new worker)


def plugin_runtime_env(modules: list[str]) -> dict[str, Any] | None:
    """runtime_env for ray.init: the --plugin modules as py_modules, their names in ENV_VAR."""
    if not modules:
        return None
    from trainables.plugins import ENV_VAR, module_files

    shipped: list[str] = []
    for name, path in module_files(sorted({m.split(".")[0] for m in modules})):
        if path.is_dir():
            shipped.append(str(path))
        else:  # a single file: Ray ships folders, so a folder named like the module, as a package
            folder = Path(tempfile.mkdtemp(prefix="sparsesweep-plugin-")) / name
            atexit.register(shutil.rmtree, folder.parent, True)  # Ray uploaded it at ray.init
            folder.mkdir()
            shutil.copyfile(path, folder / "__init__.py")
            shipped.append(str(folder))
    return {"py_modules": shipped, "env_vars": {ENV_VAR: ",".join(modules)}}


def _load_here(modules: list[str]) -> str | None:
    """On a node: load the plugins; the one-line problem, or None."""
    from trainables.plugins import PluginError, load_plugins

    try:
        load_plugins(modules)
    except PluginError as e:
        return str(e)
    return None


def check_workers(modules: list[str]) -> None:
    """Every alive node loads `modules` (the driver's plugins, installed or shipped); raises
    ConfigError naming the first node that cannot."""
    if not modules:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(_load_here)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(modules): n.get("NodeManagerAddress", n["NodeID"]) for n in nodes}
    try:
        answers = ray.get(list(refs), timeout=CHECK_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(f"--plugin: the cluster's nodes did not load the plugins within "
                          f"{CHECK_TIMEOUT_S:.0f} s") from None
    except ray.exceptions.RayError as e:  # e.g. the runtime_env could not be built on a node
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--plugin: a node could not load the plugins: {first}") from None
    for (_, node), problem in zip(refs.items(), answers, strict=True):
        if problem:
            raise ConfigError(f"node {node}: {problem} (every node needs the plugin: installed in the "
                              f"cluster's environment, or a --plugin module shipped with the job)")
