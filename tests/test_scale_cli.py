"""The CLI of issue 8 without Ray: new flags and their bad input, what a dry run shows (every
swept axis, the data it lacks), the light paths (--help, --list-spaces) and the printed
MLflow command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.sweep import main
from orchestrator.tracking.uris import runnable

ROOT = Path(__file__).resolve().parents[1]
EP = ["--space", "ep_quick"]  # the bad values below are checked against its base
IMAGENET = ["--set", "data.dataset=imagenet", "--set", "model.name=resnet50"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--gpus-per-worker", "half"], "--gpus-per-worker: 'half' is not a number in [0, 64]"),
    (["--gpus-per-worker", "-1"], "--gpus-per-worker: '-1' is out of range; allowed: a number in [0, 64]"),
    (["--scheduler", "hyperband"], "--scheduler: 'hyperband' is not one of fifo, asha"),
    (["--grace-period", "2"], "--grace-period: applies to --scheduler asha only"),
    (["--scheduler", "asha", "--grace-period", "x"], "--grace-period: 'x' is not an integer in [1, 1000000]"),
    ([*EP, "--scheduler", "asha", "--grace-period", "15"],
     "--grace-period: 15 leaves no rung before the end (the shortest trial trains 15 epochs); use 1..14"),
    (["--scheduler", "asha", "--space", "iep_quick", "--grace-period", "8"],
     "--grace-period: 8 leaves no rung before the end (the shortest trial trains 8 cycles)"),
    (["--scheduler", "asha", "--reduction-factor", "1"], "--reduction-factor: '1' is out of range; allowed: a number in (1, 1000000]"),
    (["--scheduler", "asha", "--reduction-factor", "two"], "--reduction-factor: 'two' is not a number in (1, 1000000]"),
    (["--sampler", "gp"], "--sampler: applies to --search optuna only"),
    (["--search", "optuna", "--sampler", "bayes"], "--sampler: 'bayes' is not one of tpe, gp, random, cmaes"),
    (["--search", "optuna", "--optuna-storage", "study.db"], "--optuna-storage: 'study.db' is not an RDB URL"),
    ([*IMAGENET, "--set", "data.data_dir=/nonexistent"],
     "data.data_dir: dataset imagenet not found, missing /nonexistent/imagenet/train/<class>/"),
    ([*IMAGENET, "--set", "data.download=true"], "data.download: imagenet is never downloaded"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         argv: list[str], message: str) -> None:
    storage = tmp_path / "runs"
    assert main([*argv, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not storage.exists()


def test_dry_run_shows_every_swept_axis(capsys: pytest.CaptureFixture[str]) -> None:
    """ep_hparams sweeps model and dataset although its base names one of each."""
    assert main(["--dry-run", "--space", "ep_hparams", "--set", "data.data_dir=/nonexistent"]) == 0
    out = capsys.readouterr().out
    base = next(line for line in out.splitlines() if line.startswith("base: "))
    assert "model.name=" not in base and "data.dataset=" not in base
    rows = [line.split("  ", 2)[-1] for line in out.splitlines() if line.startswith("  [")]
    assert len(rows) == 56 and len(set(rows)) == 56, "each trial's row must say what differs"
    assert "model.name=resnet18 data.dataset=svhn variant=lr=0.2" in rows


def test_dry_run_without_the_data_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--dry-run", *IMAGENET, "--set", f"data.data_dir={tmp_path / 'nowhere'}",
            "--gpus-per-worker", "auto"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "note: dataset imagenet not found" in out and "not for --dry-run" in out
    assert "resnet50" in out and "GPU-hours unpacked" in out


def test_help_and_list_spaces_import_neither_torch_ray_nor_mlflow() -> None:
    probe = ("import sys\n"
             "from orchestrator.sweep import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "main(['--list-spaces'])\n"
             "print('HEAVY', [m for m in ('torch', 'ray', 'mlflow') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "ep_quick" in out and "--gpus-per-worker" in out
    assert "HEAVY []" in out


def test_printed_mlflow_command_runs_as_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make sweep` runs the venv's python without activating the venv: `mlflow` is not on PATH."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    command = runnable("mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db")
    exe = command.split()[0]
    assert exe == str(Path(sys.executable).parent / "mlflow")
    assert command.endswith(" ui --backend-store-uri sqlite:////tmp/x/mlflow.db")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert version.returncode == 0 and "version" in version.stdout
    assert runnable("open http://127.0.0.1:5000") == "open http://127.0.0.1:5000"


def test_make_ui_uses_the_venv() -> None:
    if not (ROOT / "Makefile").is_file() or subprocess.run(["which", "make"], capture_output=True).returncode:
        pytest.skip("needs make")
    out = subprocess.run(["make", "-n", "ui", "STORAGE=/tmp/runs", "PORT=5123"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60).stdout
    assert ".venv/bin/python -m orchestrator.tracking.ui --storage /tmp/runs --port 5123" in out
