"""The example plugin end to end: installed (its entry point found at start-up) and named with
--plugin (shipped to Ray's workers), each runs a real sweep through Ray and MLflow whose
criterion shows up in the DST report next to magnitude and SNIP; a plugin a worker cannot
import stops the sweep at once with one line.

The example is installed with `pip install --target` into a temporary folder on PYTHONPATH,
never into the shared environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_criterion"
FAST = ["--set", "schedule.epochs=2", "--set", "run.max_steps_per_epoch=6", "--set", "data.batch_size=32",
        "--set", "method.update_period=2", "--max-concurrent", "2"]
REPORT_FIGURES = ("dst_fig1.csv", "dst_fig3_all.csv", "dst_fig6a.csv")


def cli(*args: str, pythonpath: list[Path], cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    env.pop("SPARSESWEEP_PLUGINS", None)
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:])
    return proc


def check_sweep(storage: Path, name: str, *, plugin_tag: str) -> tuple[MlflowClient, object]:
    """Every trial ran magsnip, magnitude or SNIP, the params hold the plugin's key, the report's
    DST figures have magsnip next to the built-ins; returns the client and parent run."""
    client = MlflowClient(tracking_uri=f"sqlite:///{storage}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    parent, = client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    assert parent.info.status == "FINISHED"
    assert plugin_tag in parent.data.tags["sparsesweep.plugins"]
    children = list(iter_child_runs(client, exp.experiment_id, parent.info.run_id))
    assert sorted(c.data.params["method.criterion"] for c in children) == sorted(["magsnip", "magnitude",
                                                                                   "snip"] * 2)
    assert all(c.data.params["method.magsnip_beta"] == "0.5" and c.info.status == "FINISHED" for c in children)
    report = storage / "tune" / name / "report"
    for figure in REPORT_FIGURES:
        table = pd.read_csv(report / figure)
        column = "criterion" if "criterion" in table else table.columns[0]
        names = set(table[column].astype(str)) | set(table.columns)
        assert {"magsnip", "magnitude", "snip"} <= names, (figure, names)
    return client, parent


def test_installed_example_plugin_lists_runs_and_reports(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(EXAMPLE, source)  # pip's build leaves files next to the sources
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                          "--no-index", "--quiet", "--target", str(site), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    path = [ROOT, site]
    listed = cli("--list-spaces", pythonpath=path)
    assert listed.returncode == 0 and "magsnip_digits" in listed.stdout
    keys = cli("--list-keys", pythonpath=path)
    assert keys.returncode == 0 and "method.magsnip_beta" in keys.stdout
    assert "magsnip" not in cli("--list-spaces", pythonpath=[ROOT]).stdout  # not installed: not there
    storage = tmp_path / "runs"
    proc = cli("--space", "magsnip_digits", "--storage", str(storage), "--name", "installed", "--experiment",
               "installed", *FAST, pythonpath=path)
    assert proc.returncode == 0
    check_sweep(storage, "installed", plugin_tag="sparsesweep_magsnip (entry point magsnip of sparsesweep-magsnip 0.1.0)")


def test_plugin_module_with_a_space_file_runs_without_installation(tmp_path: Path) -> None:
    """--plugin ships the module to the workers (runtime_env); the space is a file using the
    plugin's criterion, logged to the parent run and copied for --resume."""
    work = tmp_path / "work"  # the driver imports the plugin from its working directory only
    shutil.copytree(EXAMPLE / "sparsesweep_magsnip", work / "sparsesweep_magsnip")
    space = yaml.safe_load((EXAMPLE / "sparsesweep_magsnip" / "magsnip_digits.yaml").read_text())
    space["name"] = "magsnip_file"
    (work / "mine.yaml").write_text(yaml.safe_dump(space))
    listed = cli("--plugin", "sparsesweep_magsnip", "--list-spaces", pythonpath=[ROOT], cwd=work)
    assert listed.returncode == 0 and "magsnip_digits" in listed.stdout
    storage = tmp_path / "runs"
    proc = cli("--plugin", "sparsesweep_magsnip", "--space", "mine.yaml", "--storage", str(storage),
               "--name", "shipped", "--experiment", "shipped", *FAST, pythonpath=[ROOT], cwd=work)
    assert proc.returncode == 0
    client, parent = check_sweep(storage, "shipped", plugin_tag="sparsesweep_magsnip (--plugin)")
    assert parent.data.params["space"] == "magsnip_file"
    assert "space.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    copy = storage / "tune" / "shipped" / "space.yaml"
    assert yaml.safe_load(copy.read_text()) == space
    state = (storage / "tune" / "shipped" / "sparsesweep.json").read_text()
    assert str(copy) in state and "sparsesweep_magsnip" in state  # what --resume reads


def test_a_plugin_a_worker_cannot_import_stops_the_sweep_at_once(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    proc = cli("--plugin", "worker_only_fails", "--space", "ep_quick", "--storage", str(storage), *FAST[:6],
               pythonpath=[ROOT, ROOT / "tests" / "plugins"])
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: node ")
    assert "plugin worker_only_fails: cannot import it: ImportError: this node does not have" in errors[0]
    assert not list((storage / "tune").glob("*/trial_*"))  # no trial started
