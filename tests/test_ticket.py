"""Strong tickets: export from a checkpoint, bit-exact rebuild from seed + mask, CLI errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainables.config import ExperimentConfig
from trainables.loop import build_state, save_checkpoint
from trainables.methods.base import Position, StepContext
from trainables.sparse.mask_io import write_masks
from trainables.sparse.supermask import supermask_modules
from trainables.ticket import main, read_ticket, rebuild_ticket, write_ticket


def _cfg(**extra: object) -> ExperimentConfig:
    return ExperimentConfig.from_flat({"model.name": "conv2", "data.dataset": "digits", "run.seed": 7,
                                       "method.name": "edge_popup", "method.prune_rate": 0.7,
                                       "data.batch_size": 16, **extra})


def _trained_checkpoint(cfg: ExperimentConfig, directory: Path, steps: int = 3) -> None:
    """A few engine steps (so the mask moved away from the init's), then a real checkpoint."""
    state = build_state(cfg, torch.device("cpu"), 10)
    state.method.on_train_start(state.model, Position(step=0, epoch=0, cycle=1, steps_per_epoch=10))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    for i in range(steps):
        ctx = StepContext(step=i, epoch=0, cycle=1, steps_per_epoch=10, optimizer=state.optimizer, x=x, y=y)
        state.method.before_step(state.model, ctx)
        state.optimizer.zero_grad()
        F.cross_entropy(state.model(x), y).backward()
        state.optimizer.step()
        state.step += 1
    save_checkpoint(state, cfg, directory)


def test_export_rebuild_verify_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg()
    ckpt = tmp_path / "ckpt"
    _trained_checkpoint(cfg, ckpt)
    assert main(["export", str(ckpt), str(tmp_path / "t.parquet")]) == 0
    out = tmp_path / "w.safetensors"
    assert main(["rebuild", str(tmp_path / "t.parquet"), str(out), "--verify", str(ckpt)]) == 0
    assert "bit-identical" in capsys.readouterr().out
    from safetensors.torch import load_file

    rebuilt = load_file(str(out))
    model = torch.load(ckpt / "state.pt", weights_only=True)["model"]
    masks = read_ticket(tmp_path / "t.parquet")[1]
    assert set(rebuilt) == set(masks)  # conv2 in EP: only supermask weights are parameters
    for name, w in rebuilt.items():
        assert torch.equal(w, model[name] * masks[name]), name
        assert w.numpy().tobytes() == (model[name] * masks[name]).numpy().tobytes()  # bit for bit


@pytest.mark.parametrize("density", [0.0, 0.01, 0.05, 0.2, 0.3, 0.5, 0.99, 1.0])
def test_rebuild_at_every_density(tmp_path: Path, density: float) -> None:
    """Any mask (the empty and the full one included) rebuilds θ0 ⊙ m of the engine's θ0."""
    cfg = _cfg(**{"method.prune_rate": 0.5, "run.seed": 3})
    engine = supermask_modules(build_state(cfg, torch.device("cpu"), 10).model)
    g = torch.Generator().manual_seed(int(density * 100))
    masks = {n: (torch.rand(m.weight.shape, generator=g) < density) if 0 < density < 1
             else torch.full(m.weight.shape, bool(density)) for n, m in engine.items()}
    write_ticket(tmp_path / "t.parquet", cfg, masks)
    cfg_back, masks_back = read_ticket(tmp_path / "t.parquet")
    assert cfg_back.run.seed == 3 and cfg_back.method.prune_rate == 0.5
    rebuilt = rebuild_ticket(cfg_back, masks_back)
    for name, layer in engine.items():
        want = layer.weight.detach() * masks[name]
        assert torch.equal(masks_back[name], masks[name])
        assert want.numpy().tobytes() == rebuilt[name].numpy().tobytes(), name
        if density == 0.0:
            assert not rebuilt[name].any()
        if density == 1.0:
            assert torch.equal(rebuilt[name], layer.weight.detach())


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err, err


def test_bad_paths_and_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_exit_2(["export", str(tmp_path / "nope"), str(tmp_path / "t.parquet")], capsys,
                     "no such checkpoint")
    _one_line_exit_2(["rebuild", str(tmp_path / "nope.parquet"), str(tmp_path / "w.safetensors")], capsys,
                     "no such ticket")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    _one_line_exit_2(["rebuild", str(tmp_path / "junk.parquet"), str(tmp_path / "w.pt")], capsys,
                     "not a ticket file")
    write_masks(tmp_path / "plain.parquet", {"a.weight": torch.ones(3, dtype=torch.bool)})
    _one_line_exit_2(["rebuild", str(tmp_path / "plain.parquet"), str(tmp_path / "w.pt")], capsys,
                     "without a ticket")
    (tmp_path / "empty").mkdir()
    _one_line_exit_2(["export", str(tmp_path / "empty"), str(tmp_path / "t.parquet")], capsys, "manifest")
    dense = tmp_path / "dense"
    cfg = ExperimentConfig.from_flat({"model.name": "conv2", "data.dataset": "digits", "method.name": "dense"})
    save_checkpoint(build_state(cfg, torch.device("cpu"), 10), cfg, dense)
    _one_line_exit_2(["export", str(dense), str(tmp_path / "t.parquet")], capsys, "")


def test_the_command_line_is_a_module_of_trainables_without_ray_or_mlflow(tmp_path: Path) -> None:
    """`python -m trainables.ticket` runs where only torch is installed: it imports neither."""
    import subprocess
    import sys

    code = ("import sys, runpy; sys.argv = ['x', 'export', 'missing', 'out.parquet']\n"
            "try:\n    runpy.run_module('trainables.ticket', run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "loaded = [m for m in ('ray', 'mlflow', 'orchestrator') if m in sys.modules]\n"
            "print(code, loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.split("\n")[-2] == "2 []", out.stdout + out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
