"""Search spaces as files: the same trials as the built-in space they spell out, every key
checked before anything starts, and the file kept with the sweep for --resume."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from orchestrator.settings import Settings, SweepLayout
from orchestrator.sweep import build_plan, main
from search_spaces import REGISTRY, get_space, load_space, make_plan
from search_spaces.files import load_space_file, space_to_dict
from trainables.config import ConfigError

LOCAL = {"data.dataset": "digits", "model.name": "conv4"}


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _hashes(plan) -> list[str]:
    return [plan.resolve(p).hash() for p in plan.points()]


def test_every_builtin_space_written_as_yaml_gives_the_same_trials(tmp_path: Path) -> None:
    for space in REGISTRY.values():
        data = space_to_dict(space)
        data["name"] = f"{space.name}_file"
        loaded = load_space_file(_write_yaml(tmp_path / f"{space.name}.yaml", data))
        varied = {k for v in space.variants.values() for k in v}
        sets = {k: v for k, v in LOCAL.items() if k not in varied}
        if space.name.startswith("imp_") and "data.batch_size" not in varied:
            sets["data.batch_size"] = 128
        if space.name == "ep_hparams":
            sets["schedule.epochs"] = 20
        a = make_plan(space, search="grid", sets=sets, grid_overrides={}, num_samples=1)
        b = make_plan(loaded, search="grid", sets=sets, grid_overrides={}, num_samples=1)
        assert _hashes(a) == _hashes(b), space.name
        assert loaded.optuna == space.optuna, space.name
        assert (loaded.metric, loaded.mode, loaded.paper) == (space.metric, space.mode, space.paper)


def test_toml_with_nested_tables_and_dotted_keys(tmp_path: Path) -> None:
    path = tmp_path / "crit.toml"
    path.write_text('''
name = "crit_toml"
description = "two criteria on digits"
[base]
data.dataset = "digits"
"model.name" = "mlp"
method = { name = "dst", density = 0.2 }
[grid]
"method.criterion" = ["magnitude", "snip"]
[variants.static]
"method.update_period" = 0
[variants.dynamic]
[optuna]
"optim.lr" = { type = "float", low = 0.01, high = 0.5, log = true }
"schedule.epochs" = { type = "int", low = 1, high = 4 }
"method.criterion" = { type = "categorical", choices = ["magnitude", "snip"] }
''')
    space = load_space_file(path)
    assert space.base == {"data.dataset": "digits", "model.name": "mlp", "method.name": "dst",
                          "method.density": 0.2}
    assert space.grid == {"method.criterion": ("magnitude", "snip")}
    assert space.variants == {"static": {"method.update_period": 0}, "dynamic": {}}
    assert space.optuna["optim.lr"].log and space.optuna["schedule.epochs"].high == 4
    plan = make_plan(space, search="grid", sets={}, grid_overrides={}, num_samples=1)
    assert len(plan.points()) == 4


@pytest.mark.parametrize("body,message", [
    ({"name": "x", "description": "d", "base": {"method.critrion": "snip"}},
     "base.method.critrion: unknown config key 'method.critrion'"),
    ({"name": "x", "description": "d", "grid": {"optim.lr": "0.1"}}, "grid.optim.lr: expected a non-empty list"),
    ({"name": "x", "description": "d", "grid": {"optim.lr": ["fast"]}}, "grid.optim.lr: optim.lr: expected a number"),
    ({"name": "x", "description": "d", "optuna": {"optim.lr": {"type": "normal"}}},
     "optuna.optim.lr: expected a table with type = one of float, int, categorical"),
    ({"name": "x", "description": "d", "optuna": {"optim.lr": {"type": "float", "low": 1, "high": 0.1}}},
     "optuna.optim.lr: "),
    ({"name": "x", "description": "d", "optuna": {"optim.lr": {"type": "float", "low": 0.1, "hi": 1}}},
     "optuna.optim.lr: float takes low, high, log, step, not 'hi'"),
    ({"name": "x", "description": "d", "varients": {}}, "unknown field 'varients'"),
    ({"description": "d"}, "name: required"),
    ({"name": "x", "description": "d", "variants": {"a": {"variant": "b"}}}, "'variant' is reserved"),
    ({"name": "dst_quick", "description": "d"}, "name 'dst_quick' is a registered space"),
])
def test_bad_space_file_is_one_line_naming_the_file_and_field(tmp_path: Path, body: dict, message: str) -> None:
    path = _write_yaml(tmp_path / "bad.yaml", body)
    with pytest.raises(ConfigError) as e:
        load_space(str(path))
    assert str(e.value).startswith(f"--space {path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_dry_run_of_a_space_file_lists_the_builtin_trials(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = {**space_to_dict(get_space("dst_quick")), "name": "dst_quick_copy"}
    path = _write_yaml(tmp_path / "dst.yaml", data)
    storage = str(tmp_path / "s")
    assert main(["--space", "dst_quick", "--dry-run", "--storage", storage]) == 0
    builtin = re.findall(r"\] ([0-9a-f]{12}) ", capsys.readouterr().out)
    assert main(["--space", str(path), "--dry-run", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert out.startswith("space dst_quick_copy") and builtin
    assert re.findall(r"\] ([0-9a-f]{12}) ", out) == builtin
    assert not Path(storage, "tune").exists()  # a dry run writes nothing


def test_cli_bad_space_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_yaml(tmp_path / "bad.yaml", {"name": "x", "description": "d", "grid": {"optim.lx": [1]}})
    assert main(["--space", str(path), "--dry-run", "--storage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "grid.optim.lx: unknown config key" in err
    assert main(["--space", str(tmp_path / "none.yaml"), "--dry-run"]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().err
    (tmp_path / "broken.toml").write_text("name = \n")
    assert main(["--space", str(tmp_path / "broken.toml"), "--dry-run"]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_resume_reads_the_copy_in_the_sweep_folder(tmp_path: Path) -> None:
    """The driver copies the file to SweepLayout.space_copy and saves that path: a later edit
    (or deletion) of the original does not change the sweep being resumed."""
    original = _write_yaml(tmp_path / "mine.yaml", {
        "name": "mine", "description": "d", "base": {"data.dataset": "digits", "model.name": "mlp"},
        "grid": {"optim.lr": [0.1, 0.2]}})
    layout = SweepLayout(str(tmp_path / "s"), "sweep1")
    copy = layout.space_copy(".yaml")
    copy.parent.mkdir(parents=True)
    copy.write_text(original.read_text())
    settings = Settings(space="mine", space_file=str(copy), storage=layout.storage, name="sweep1")
    layout.write_settings(settings)
    original.unlink()
    plan = build_plan(layout.read_settings())
    assert plan.space.name == "mine" and len(plan.points()) == 2
