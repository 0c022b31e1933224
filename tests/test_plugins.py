"""Plugins: what they register behaves like a built-in (keys, choices, validation, training,
hashes), and every way a plugin can be wrong is one line and exit 2."""

from __future__ import annotations

import copy
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import search_spaces
import trainables.plugins as plugins
from orchestrator.sweep import main
from trainables.config import DATASETS, MODEL_MIN_SIDE, MODELS, ConfigError, ExperimentConfig, cards
from trainables.config.methods import CRITERION_NAMES, GROWTH_NAMES
from trainables.sparse import dst_criteria

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_criterion"
HERE = Path(__file__).resolve().parent / "plugins"


@pytest.fixture()
def registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every registry a plugin writes, restored afterwards; the test plugins importable."""
    from trainables.data.folder import EXTRA_FOLDERS
    from trainables.data.readers import EXTRA_READERS
    from trainables.models import MODEL_BUILDERS

    tables = [CRITERION_NAMES, GROWTH_NAMES, dst_criteria.EXTRA_CRITERIA, dst_criteria.EXTRA_GROWTH,
              cards._CARDS, MODELS, MODEL_MIN_SIDE, MODEL_BUILDERS, DATASETS, EXTRA_READERS, EXTRA_FOLDERS,
              search_spaces.REGISTRY, plugins.LOADED, plugins._OWNERS]
    saved = [copy.copy(t) for t in tables]
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    yield
    for table, old in zip(tables, saved, strict=True):
        table.clear()
        table.update(old)
    for name, module in list(sys.modules.items()):  # the next test imports them afresh
        if str(getattr(module, "__file__", "") or "").startswith((str(HERE), str(EXAMPLE))):
            del sys.modules[name]


def test_magsnip_scores_by_hand() -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from sparsesweep_magsnip import magsnip_scores
    finally:
        sys.path.remove(str(EXAMPLE))
    w, g = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 0.25])
    active = torch.ones(2, dtype=torch.bool)
    # |θ|·|g|^β: β=½ -> [1·2, 2·0.5]; β=0 -> |θ| (magnitude); β=1 -> |θg| (SNIP)
    assert magsnip_scores(w, g, active, beta=0.5).tolist() == [2.0, 1.0]
    assert torch.equal(magsnip_scores(w, g, active, beta=0.0), dst_criteria.prune_scores("magnitude", w, g))
    assert torch.equal(magsnip_scores(w, g, active, beta=1.0), dst_criteria.prune_scores("snip", w, g))


def test_criterion_is_a_config_choice_with_typed_keys_and_prunes(registries: None) -> None:
    builtin = ExperimentConfig.from_flat({"method.name": "dst", "method.criterion": "snip"}).hash()
    plugins.load_plugins(["sparsesweep_magsnip"], entry_points=False)
    assert "magsnip" in CRITERION_NAMES and plugins.LOADED["sparsesweep_magsnip"] == "--plugin"
    cfg = ExperimentConfig.from_flat({"method.name": "dst", "method.criterion": "magsnip",
                                      "method.magsnip_beta": "0.25"})
    assert cfg.method.magsnip_beta == 0.25 and cfg.to_flat()["method.magsnip_beta"] == 0.25
    # a parameter at its default leaves every existing config's hash (its identity) unchanged
    assert ExperimentConfig.from_flat({"method.name": "dst", "method.criterion": "snip"}).hash() == builtin
    with pytest.raises(ConfigError, match=r"method.magsnip_beta: 2.0 must be <= 1"):
        ExperimentConfig.from_flat({"method.name": "dst", "method.magsnip_beta": 2})
    with pytest.raises(ConfigError, match="method.criterion: 'magsnap' is not one of .*snip, random, magsnip"):
        ExperimentConfig.from_flat({"method.name": "dst", "method.criterion": "magsnap"})
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # the extended class crosses processes
    w, g = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([4.0, 0.25, 1.0, 0.0])
    active = torch.tensor([True, True, True, False])
    # scores [2, 1, 0.5, 0]; the inactive entry never counts: the two lowest active are 2 and 1
    picked = dst_criteria.prune_selection("magsnip", w, g, active, 2, params={"beta": 0.5})
    assert picked.tolist() == [False, True, True, False]


def test_growth_method_model_dataset_and_space_register_and_train(registries: None) -> None:
    from trainables.loop import run_experiment
    from trainables.methods import build_method
    from trainables.models import build_model
    from trainables.sparse.masked import masked_modules
    from trainables.sparse.supermask import supermask_modules

    plugins.load_plugins(["demo_plugin"], entry_points=False)
    assert dst_criteria.growth_needs_gradient("gradpow")
    grown = dst_criteria.grow_selection("gradpow", torch.tensor([True, True, False, True]), 2,
                                        effective_grad=torch.tensor([0.1, -3.0, 9.0, 2.0]), params={"power": 2.0})
    assert grown.tolist() == [False, True, False, True]  # the largest among inactive entries only
    space = search_spaces.get_space("demo_space")
    plan = search_spaces.make_plan(space, search="grid", sets={}, grid_overrides={}, num_samples=1)
    cfg = plan.trial_configs()[0]
    assert (cfg.method.name, cfg.model.name, cfg.data.dataset) == ("clipped_dense", "two_layer", "blobs")
    assert cards.family_of("clipped_dense") == "dense" and cards.label_of("clipped_dense") == "clipped dense"
    metrics = run_experiment(cfg.with_overrides({"run.max_steps_per_epoch": 3}))
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert type(build_method(cfg)).__name__ == "ClippedDense"
    # the model is built through the factory: dense, masked (DST) or a supermask (edge-popup)
    dst = ExperimentConfig.from_flat({"data.dataset": "blobs", "model.name": "two_layer", "method.name": "dst",
                                      "method.growth": "gradpow", "method.gradpow_power": 2})
    assert len(masked_modules(build_model(dst, build_method(dst).layer_factory()))) == 2
    ep = ExperimentConfig.from_flat({"data.dataset": "blobs", "model.name": "two_layer"})
    assert len(supermask_modules(build_model(ep, build_method(ep).layer_factory()))) == 2
    assert not masked_modules(build_model(cfg, build_method(cfg).layer_factory()))
    metrics = run_experiment(dst.with_overrides({"run.max_steps_per_epoch": 4, "method.update_period": 2,
                                                 "schedule.epochs": 1, "data.batch_size": 32}))
    assert metrics["updates"] >= 1


@pytest.mark.parametrize("module,message", [
    ("no_such_plugin_module", "plugin no_such_plugin_module: cannot import it: ModuleNotFoundError"),
    ("broken_import", "plugin broken_import: cannot import it: ModuleNotFoundError: No module named "
                      "'sparsesweep_no_such_dependency'"),
    ("bad_version", "plugin bad_version: written for plugin API 2, this sparsesweep's is 1"),
    ("no_version", "plugin no_version: declares no SPARSESWEEP_PLUGIN_API"),
    ("takes_magnitude", "plugin takes_magnitude: criterion 'magnitude' is built in; a plugin cannot replace it"),
    ("takes_space", "plugin takes_space: space 'dst_quick' is built in; a plugin cannot replace it"),
    ("untyped_param", "plugin untyped_param: criterion noisy: parameter 'scale' declares no type"),
])
def test_bad_plugin_exits_2_with_one_line(registries: None, capsys: pytest.CaptureFixture[str],
                                          module: str, message: str) -> None:
    assert main(["--plugin", module, "--list-spaces"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: {message}"), captured.err


def test_a_second_plugin_cannot_take_a_plugins_name(registries: None) -> None:
    plugins.load_plugins(["sparsesweep_magsnip"], entry_points=False)
    api = plugins.PluginAPI("other")
    with pytest.raises(plugins.PluginError, match="^plugin other: criterion 'magsnip' is already registered "
                                                  "by plugin sparsesweep_magsnip$"):
        api.criterion("magsnip", lambda w, g, a, *, generator=None: w, needs_grad=False)


def test_plugin_appears_in_list_keys_list_spaces_and_dry_run(registries: None, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin", "sparsesweep_magsnip", "--list-spaces"]) == 0
    assert "magsnip_digits" in capsys.readouterr().out
    assert main(["--list-keys"]) == 0  # loaded once: still there
    keys = capsys.readouterr().out
    assert "method.magsnip_beta" in keys and "magsnip)" in keys  # the key, and a choice of method.criterion
    args = ["--space", "magsnip_digits", "--dry-run", "--storage", str(tmp_path / "s")]
    assert main([*args, "--grid", "method.magsnip_beta=0,1", "--set", "method.criterion=magsnip"]) == 0
    assert "method.density=0.1 method.magsnip_beta=0.0" in capsys.readouterr().out
    assert main([*args, "--search", "optuna", "--num-samples", "3"]) == 0
    assert "method.magsnip_beta: FloatDistribution" in capsys.readouterr().out


def test_plugin_modules_ship_as_py_modules_folders(registries: None) -> None:
    from orchestrator.cluster.plugins import plugin_runtime_env

    assert plugin_runtime_env([]) is None  # no --plugin: Ray's runtime_env untouched
    plugins.load_plugins(["sparsesweep_magsnip", "demo_plugin"], entry_points=False)
    env = plugin_runtime_env(["sparsesweep_magsnip", "demo_plugin"])
    assert env["env_vars"] == {plugins.ENV_VAR: "sparsesweep_magsnip,demo_plugin"}
    single, package = map(Path, env["py_modules"])  # sorted by name
    assert package == EXAMPLE / "sparsesweep_magsnip"  # a package: its folder
    # a single-file module: a folder of its name holding it as __init__.py (Ray ships folders)
    assert single.name == "demo_plugin" and (single / "__init__.py").read_text() == (HERE / "demo_plugin.py").read_text()
