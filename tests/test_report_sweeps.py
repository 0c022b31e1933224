"""Reports from real sweeps: tiny runs of every family through the CLI (real local Ray, SQLite
MLflow), then the report each sweep ends with. Every figure the runs allow is written, and
its CSV holds what the MLflow client returns. (tests/test_report.py covers every figure on
synthetic runs logged straight to MLflow.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def sweep(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def runs_of(uri: str, experiment: str) -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    return client, list(iter_child_runs(client, exp.experiment_id, parent.info.run_id))


def assert_finals_logged(client: MlflowClient, table: pd.DataFrame, metric: str) -> None:
    for row in table.itertuples():
        assert getattr(row, metric) == pytest.approx(client.get_run(row.run_id).data.metrics[metric], abs=1e-12)


def test_default_sweep_is_the_tour_and_ends_with_the_cross_family_chart(tmp_path: Path) -> None:
    """`python -m orchestrator.sweep` with no space: one run per family, then the report with
    the cross-family chart (steps cut short; the tour's own epochs and densities kept)."""
    storage = tmp_path / "runs"
    proc = sweep("--storage", str(storage), "--name", "tour", "--experiment", "tour",
                 "--set", "run.max_steps_per_epoch=6", "--max-concurrent", "2")  # DST: 60 steps, one update
    client, children = runs_of(f"sqlite:///{storage.resolve()}/mlflow.db", "tour")
    # run names are <method>/<variant>/seed=<s>
    assert sorted(c.info.run_name.split("/")[1] for c in children) == ["dense", "dst_rigl", "ep", "imp", "soft_iep"]
    report = storage / "tune" / "tour" / "report"
    assert f"Report: {report / 'index.html'}" in proc.stdout
    # every figure these runs allow, each PNG non-empty with its numbers beside it
    expected = {"cross_families", "slt_fig3b", "slt_fig5a", "slt_fig6", "imp_fig1", "imp_fig4", "imp_fig5",
                "imp_fig6", "imp_fig8", "dst_fig6a"}
    written = {p.stem for p in report.glob("*.png") if p.stat().st_size > 5_000}
    assert expected <= written, expected - written
    assert all((report / f"{name}.csv").stat().st_size > 0 for name in expected)
    html = (report / "index.html").read_text()
    assert all(f'data-file="{name}.png"' in html for name in expected)  # inline, the file beside it
    assert "sparsesweep report: tour / tour" in html  # the sweep's name, not its parent run's id
    # the CSVs hold what the MLflow client returns: final metrics, and per-cycle ones at step = cycle
    cross = pd.read_csv(report / "cross_families.csv")
    finals = cross[cross["cycle"].isna()]
    assert sorted(finals["method"]) == ["DST", "EP", "IMP", "dense", "soft iEP"]
    for row in finals.itertuples():
        logged = client.get_run(row.run_id).data.metrics
        assert row.test_acc == pytest.approx(logged["test_acc"], abs=1e-12)
        assert row.density == pytest.approx(logged.get("density", 1.0), abs=1e-12)  # dense: no mask
    for name, key, step in (("slt_fig3b", "cycle/test_acc", "cycle"), ("imp_fig1", "cycle/test_acc", "round")):
        table = pd.read_csv(report / f"{name}.csv")
        assert len(table) >= 5
        for run_id, rows in table.groupby("run_id"):
            history = {m.step: m.value for m in client.get_metric_history(run_id, key)}
            assert dict(zip(rows[step], rows[key], strict=True)) == pytest.approx(
                {c: history[c] for c in rows[step]}, abs=1e-12)


def test_update_period_sweep_draws_dst_figs_5_and_11(tmp_path: Path) -> None:
    """`dst_dt_quick` (4 epochs): accuracy and ITOP against Δt per growth, from real DST runs."""
    storage = tmp_path / "runs"
    proc = sweep("--space", "dst_dt_quick", "--storage", str(storage), "--name", "dt", "--experiment", "dt",
                 "--set", "schedule.epochs=4", "--max-concurrent", "2")
    client, children = runs_of(f"sqlite:///{storage.resolve()}/mlflow.db", "dt")
    assert len(children) == 10
    report = storage / "tune" / "dt" / "report"
    assert f"Report: {report / 'index.html'}" in proc.stdout
    for name, metric in (("dst_fig5", "test_acc"), ("dst_fig11", "itop")):
        assert (report / f"{name}.png").stat().st_size > 5_000
        table = pd.read_csv(report / f"{name}.csv")
        dynamic = table[~table["label"].isin(["static", "dense"])]
        assert sorted(set(dynamic["update_period"])) == [10, 25, 50, 100]
        assert_finals_logged(client, table.dropna(subset=[metric]), metric)
    itop = pd.read_csv(report / "dst_fig11.csv").set_index(["growth", "update_period"])["itop"]
    # more frequent updates explore more weights: ITOP at Δt = 10 above Δt = 100, both above D
    for growth in ("random", "gradient"):
        assert itop[(growth, 10)] > itop[(growth, 100)] >= 0.2 - 1e-3, itop
