"""The front doors a researcher reads results through: `--variants`, `--help`'s default space, a
dry run without the data, `python -m orchestrator.report --help` without heavy imports, and
`python -m orchestrator.tracking.ui`'s one link to a sweep's saved view on the real port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import fresh_store
from orchestrator.sweep import main
from orchestrator.tracking import ui
from orchestrator.tracking.labels import SweepLabels
from orchestrator.tracking.tags import KIND_TAG, SWEEP_NAME_TAG

ROOT = Path(__file__).resolve().parents[1]


def _rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  [")]


def test_variants_pick_named_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--space", "iep_quick", "--variants", "soft_lr,ep", "--dry-run", "--storage", str(tmp_path)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [r.split()[-1] for r in rows] == ["variant=ep", "variant=soft_lr"]  # the space's order
    # one seed, two densities of one criterion: cut from the command line, no other space needed
    assert main(["--space", "dst_quick", "--variants", "set+random d=0.05,set+random d=0.2", "--dry-run",
                 "--storage", str(tmp_path)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [r.split("variant=")[1] for r in rows] == ["set+random d=0.2", "set+random d=0.05"]  # space's order


@pytest.mark.parametrize(("argv", "message"), [
    (["--space", "iep_quick", "--variants", "ep,nope"],
     "error: --variants: 'nope' not a variant of space 'iep_quick'; one of ep, hard_lr, soft_lr"),
    (["--space", "ep_quick", "--variants", "ep"], "error: --variants: space 'ep_quick' has no named variants"),
])
def test_unknown_variants_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              argv: list[str], message: str) -> None:
    assert main([*argv, "--dry-run", "--storage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "s").exists()


def test_help_names_the_default_space_and_variants(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default tour" in out and "ep_quick" not in out.split("--space SPACE")[1].split("--variants")[0]
    assert "--variants A,B" in out and "named variants" in out


def test_dry_run_without_data_prints_plan_cost_and_one_note(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--space", "ep_hparams", "--dry-run", "--storage", str(tmp_path / "s")]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert len(_rows(out)) == 56 and "GPU-hours" in out  # the plan and its cost
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "cifar10 is read from a directory" in notes[0], notes
    assert captured.err == "" and not (tmp_path / "s").exists()


def test_report_help_is_light() -> None:
    probe = ("import sys\n"
             "from orchestrator.report.__main__ import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', [m for m in ('torch', 'ray', 'mlflow', 'pandas', 'matplotlib') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "--experiment" in out and "HEAVY []" in out


def test_ui_prints_the_saved_view_on_its_port(migrated_db: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    uri = fresh_store(migrated_db, tmp_path)
    client = MlflowClient(uri)
    labels = SweepLabels(sweep_name="s1", space="tour")
    tag, value = labels.shared_view("test_acc", "max")
    exp = client.create_experiment("e", tags={tag: value})
    client.create_run(exp, tags={KIND_TAG: "sweep", SWEEP_NAME_TAG: "s1"})
    assert ui.main(["--storage", str(tmp_path), "--port", "5123", "--print-only"]) == 0
    out = capsys.readouterr().out
    assert "--port 5123" in out.splitlines()[0]
    view = f"http://127.0.0.1:5123/#/experiments/{exp}/runs?viewStateShareKey=sweep-s1&workflowType=machine_learning"
    assert view in out and view + "&compareRunsMode=CHART" in out
    assert ui.main(["--storage", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: --storage: no MLflow store")
