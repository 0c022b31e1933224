"""orchestrator.report on small synthetic sweeps logged to a real SQLite MLflow store: every
figure the runs allow is written, non-empty, with the numbers the MLflow client returns."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from orchestrator.report.__main__ import main
from tests.conftest import fresh_store
from trainables.metrics.distances import distance_row, distance_table
from trainables.metrics.histograms import weight_histogram
from trainables.sparse.mask_io import masks_to_bytes, table_to_bytes

EXPERIMENT = "rep"


class Logger:
    """Parent and child runs shaped like the sweep's (tags, flat params, per-step metrics, artifacts)."""

    def __init__(self, uri: str, root: Path) -> None:
        self.client = MlflowClient(uri)
        self.exp = self.client.create_experiment(EXPERIMENT, artifact_location=str(root / "artifacts"))
        self.root = root

    def parent(self, name: str, space: str, sets: dict[str, str] | None = None,
               tags: dict[str, str] | None = None) -> str:
        """`sets`: the parent's set.KEY / grid.KEY params, as the driver logs them."""
        run = self.client.create_run(self.exp, run_name=name, tags={"sparsesweep.kind": "sweep",
                                                                    "sparsesweep.space": space, **(tags or {})})
        params = {"space": space, "search": "grid", "num_samples": "1", **(sets or {})}
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        return run.info.run_id

    def child(self, parent: str, params: dict[str, object], steps: dict[int, dict[str, float]],
              files: dict[str, bytes] | None = None, tags: dict[str, str] | None = None) -> str:
        run = self.client.create_run(self.exp, tags={"mlflow.parentRunId": parent, "sparsesweep.kind": "trial",
                                                     **(tags or {})})
        rid = run.info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for step, vals in steps.items() for k, v in vals.items()]
        for i in range(0, len(metrics), 900):
            self.client.log_batch(rid, metrics=metrics[i:i + 900])
        self.client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()],
                              tags=[RunTag("sparsesweep.status", "finished")])
        for path, blob in (files or {}).items():
            local = self.root / "staging" / rid / path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(blob)
            self.client.log_artifact(rid, str(local), str(Path(path).parent))
        self.client.set_terminated(rid, "FINISHED")
        return rid


def _masks(seed: int, density: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"fc1": torch.rand(20, 10, generator=g) < density, "fc2": torch.rand(10, 5, generator=g) < density}


def log_slt(lg: Logger) -> None:
    ep = lg.parent("ep", "ep_quick", {"set.schedule.epochs": "3", "grid.method.prune_rate": "0.2,0.5"})
    for k in (0.2, 0.5):
        for seed in (0, 1):
            d = [k * (0.6 + 0.1 * e) + 0.01 * seed for e in range(1, 4)]
            steps = {e: {"dying_ratio": d[e - 1], "k_minus_dying": k - d[e - 1], "test_acc": 0.9 - k / 10 + e / 100}
                     for e in range(1, 4)}
            lg.child(ep, {"method.name": "edge_popup", "method.prune_rate": k, "run.seed": seed,
                          "model.name": "conv4", "data.dataset": "digits", "optim.lr": 0.1}, steps)
    iep = lg.parent("iep", "iep_quick")
    variants = {"ep": {"method.score_reset": "rewind"}, "hard": {"method.pruning": "hard"}, "soft": {}}
    for name, over in variants.items():
        for seed in (0, 1):
            params = {"method.name": "iep", "method.pruning": "soft", "method.score_reset": "inherit",
                      "method.lr_reset": "rewind", "method.cycles": 3, "run.seed": seed, **over}
            steps, files = {}, {}
            for c in (1, 2, 3):
                rr = 0.8 ** c
                v0 = {"ep": 0.3, "hard": 0.2, "soft": 0.1}[name] * c
                steps[c] = {"cycle/test_acc": 0.9 - 0.05 * c * (name == "ep") + 0.01 * seed,
                            "cycle/density": rr, "cycle/dying_ratio": 1 - rr - v0 / 10,
                            **{f"cycle/visits_{i}": v0 / (i + 1) for i in range(1, 6)}, "cycle/visits_gt5": 0.2,
                            "cycle/dying_neurons_no_input": 2.0, "cycle/dying_neurons_no_output": 3.0 + c,
                            "cycle/dying_neurons_both": 1.0, "cycle/dying_neurons_overlap": 1.0,
                            "test_acc": 0.9, "dying_ratio": 0.4}
                files[f"masks/cycle_{c:02d}.parquet"] = masks_to_bytes(_masks(seed * 10 + c + len(name), rr))
                files[f"ranks/cycle_{c:02d}.parquet"] = table_to_bytes(pa.table({
                    "cycle": pa.array([c] * 4, pa.int32()), "edge": pa.array(range(4), pa.int32()),
                    "layer": ["fc1"] * 4, "index": pa.array([3, 5, 7, 9], pa.int64()),
                    "score": [0.4, 0.3, 0.2, 0.1], "rank": [0.1, 0.3, 0.5, 0.7],
                    "selected": [True, rr > 0.3, rr > 0.5, False], "threshold": [rr] * 4}))
            lg.child(iep, params, steps, files)


def log_dst(lg: Logger) -> None:
    dst = lg.parent("dst", "dst_quick")
    for crit in ("magnitude", "set", "snip"):
        for growth in ("random", "gradient"):
            for density in (0.1, 0.5):
                for period in (50, 200):
                    for seed in (0, 1):
                        acc = 0.9 + 0.02 * density - 0.01 * (crit == "snip") + 0.001 * seed + period / 1e5
                        files = {}
                        if (growth, density, period) == ("gradient", 0.1, 200):
                            files["masks/masks.parquet"] = masks_to_bytes(_masks(seed + len(crit), density))
                        if (crit, growth, period) == ("magnitude", "random", 50):
                            files["criteria_jaccard/cycle_01.parquet"] = table_to_bytes(pa.Table.from_pandas(
                                pd.DataFrame([{"update": u, "layer": layer, "a": a, "b": b,
                                               "jaccard": 1.0 if a == b else 0.3 + 0.1 * u, "j_r": 0.05,
                                               "j_r_active": 0.1} for u in (1, 2) for layer in ("fc1", "fc2")
                                              for a, b in (("magnitude", "magnitude"), ("magnitude", "snip"),
                                                           ("snip", "snip"))])))
                        lg.child(dst, {"method.name": "dst", "method.criterion": crit, "method.growth": growth,
                                       "method.density": density, "method.update_period": period, "run.seed": seed},
                                 {30: {"test_acc": acc, "itop": density + period / 1000, "dying_ratio": 0.5,
                                       "cycle/jaccard_init_random": 0.05}}, files)
    for density in (0.1, 0.5):
        lg.child(dst, {"method.name": "dst", "method.criterion": "magnitude", "method.growth": "random",
                       "method.density": density, "method.update_period": 0, "run.seed": 0},
                 {29: {"train_loss": 0.5, "test_loss": 0.75 - density},
                  30: {"test_acc": 0.85, "train_loss": 0.25, "test_loss": 0.5}})
    lg.child(dst, {"method.name": "dense", "run.seed": 0}, {30: {"test_acc": 0.95}})


def log_imp(lg: Logger) -> None:
    imp = lg.parent("imp", "imp_quick", {"set.method.lmc": "true"})
    for repel in ("off", "all"):
        for seed in (0, 1):
            steps, files, rows = {}, {}, []
            for r in (1, 2, 3):
                cycle = r  # every phase of a round logs at step = round
                steps[cycle] = {"cycle/density": 0.8 ** (r - 1),
                                "cycle/test_acc": 0.97 - 0.001 * r + 0.001 * seed,
                                "cycle/reinit_test_acc": 0.95 - 0.01 * r if r > 1 else float("nan"),
                                "cycle/instability": 0.01 * r, "cycle/successive_instability": 0.02 * r,
                                "cycle/threshold": 0.03 * r, "cycle/reinit_threshold": 0.02 * r, "test_acc": 0.96}
                if np.isnan(steps[cycle]["cycle/reinit_test_acc"]):
                    del steps[cycle]["cycle/reinit_test_acc"]
                x = torch.randn(50, generator=torch.Generator().manual_seed(r))
                rows += [distance_row("imp", f"r{r:02d}", "init", x, torch.randn(50))]
                if r > 1:
                    rows += [distance_row("imp", f"r{r - 1:02d}", f"r{r:02d}", x, x + 0.1)]
                files[f"distances/cycle_{cycle:02d}.parquet"] = table_to_bytes(distance_table(rows))
                hist = weight_histogram(x, 10, "imp")
                files[f"histograms/cycle_{cycle:02d}.parquet"] = table_to_bytes(
                    hist.append_column("round", pa.array([r] * hist.num_rows, pa.int64())))
                if r > 1:
                    alphas = np.linspace(0, 1, 5)
                    files[f"lmc/cycle_{cycle:02d}.parquet"] = table_to_bytes(pa.table({
                        "round": [r] * 5, "path": ["successive"] * 5, "alpha": alphas,
                        "error": 0.05 + 0.01 * np.sin(np.pi * alphas)}))
            lg.child(imp, {"method.name": "imp", "method.repel": repel, "method.repel_lambda": 2.0,
                           "data.batch_size": 16, "schedule.warmup_epochs": 0, "run.seed": seed}, steps, files)


def log_tour(lg: Logger) -> None:
    """A variant space (the tour's shape): one run per named variant, two seeds, one batch size."""
    tour = lg.parent("tour", "tour", tags={"sparsesweep.swept": "variant"})
    finals = {"dense": ("dense", {}, 0.97, 1.0), "ep": ("edge_popup", {"method.prune_rate": 0.672}, 0.93, 0.328),
              "soft_iep": ("iep", {"method.cycles": 5}, 0.95, 0.328),
              "dst_rigl": ("dst", {"method.density": 0.328, "method.criterion": "magnitude",
                               "method.growth": "gradient", "method.update_period": 50}, 0.96, 0.328)}
    for variant, (method, over, acc, density) in finals.items():
        for seed in (0, 1):
            lg.child(tour, {"method.name": method, **over, "run.seed": seed, "data.batch_size": 64 + 64 * seed},
                     {10: {"test_acc": acc + 0.001 * seed, "density": density}},
                     tags={"sparsesweep.variant": variant})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("report-store")
    uri = fresh_store(migrated_db, root)
    lg = Logger(uri, root)
    log_slt(lg)
    log_dst(lg)
    log_imp(lg)
    log_tour(lg)
    return uri, root


@pytest.fixture(scope="module")
def report(store: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    uri, root = store
    out = tmp_path_factory.mktemp("report") / "out"
    assert main(["--experiment", EXPERIMENT, "--storage", str(root), "--out", str(out)]) == 0
    return out, uri


EXPECTED = ["slt_table1", "slt_fig6", "slt_fig7", "slt_fig3b", "slt_fig5a", "slt_fig5b", "slt_fig15", "slt_fig17",
            "slt_table6", "slt_table4", "dst_fig1", "dst_fig4", "dst_fig5", "dst_fig11", "dst_fig3_all", "dst_fig3_low",
            "dst_fig3_high", "dst_fig6a", "dst_fig6b", "imp_fig1", "imp_fig2", "imp_fig3", "imp_fig4", "imp_fig5", "imp_fig6",
            "imp_fig8", "cross_families", "sweep_ep", "sweep_iep", "sweep_dst", "sweep_imp", "sweep_tour"]


def test_every_figure_written_with_its_numbers(report: tuple[Path, str]) -> None:
    out, _ = report
    for name in EXPECTED:
        assert (out / f"{name}.png").stat().st_size > 5000, name
        assert pd.read_csv(out / f"{name}.csv").shape[0] > 0, name
        assert pd.read_parquet(out / f"{name}.parquet").shape[0] > 0, name
    page = (out / "index.html").read_text()
    for name in EXPECTED:  # inline (MLflow shows the page from a blob URL), the file beside it
        assert f'data-file="{name}.png"' in page
    order = [page.index(f'id="{name}"') for name in ("cross_families", "sweep_tour", "slt_table1", "imp_fig1")]
    assert order == sorted(order)  # the cross-family chart and the overviews first
    assert ("python -m orchestrator.sweep --space ep_quick --name ep --experiment rep --grid method.prune_rate=0.2,0.5 "
            "--set schedule.epochs=3") in page
    assert "soft-iep.txt Table 1" in page and "understanding-imp.txt Fig. 8" in page


def test_csv_holds_what_the_client_returns(report: tuple[Path, str]) -> None:
    out, uri = report
    client = MlflowClient(uri)
    t1 = pd.read_csv(out / "slt_table1.csv")
    for row in t1.itertuples():
        m = client.get_run(row.run_id).data.metrics
        assert row.d_T == m["dying_ratio"] and row.k_minus_d_T == m["k_minus_dying"]
    f6 = pd.read_csv(out / "slt_fig6.csv")
    for run_id, g in f6.groupby("run_id"):
        hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "dying_ratio"))
        assert list(zip(g["epoch"], g["dying_ratio"], strict=True)) == hist
    f3b = pd.read_csv(out / "slt_fig3b.csv")
    for run_id, g in f3b.groupby("run_id"):
        hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "cycle/test_acc"))
        assert list(zip(g["cycle"], g["cycle/test_acc"], strict=True)) == hist
    d1 = pd.read_csv(out / "dst_fig1.csv")
    assert all(client.get_run(r.run_id).data.metrics["test_acc"] == r.test_acc for r in d1.itertuples())
    assert set(d1["label"]) >= {"static", "dense", "magnitude+random"}
    i1 = pd.read_csv(out / "imp_fig1.csv")
    assert len(i1) == 2 * 3  # two regular-IMP seeds x three rounds
    for row in i1.itertuples():
        hist = {m.step: m.value for m in client.get_metric_history(row.run_id, "cycle/test_acc")}
        assert hist[row.round] == i1.loc[row.Index, "cycle/test_acc"]
    f4 = pd.read_csv(out / "imp_fig4.csv")  # one panel per setting, mean over its seeds
    assert f4["setting"].nunique() == 2 and set(f4["runs"]) == {2}
    x2 = torch.randn(50, generator=torch.Generator().manual_seed(2))  # what log_imp logged for r02
    pair = f4[(f4["a"] == "r01") & (f4["b"] == "r02")]
    assert list(pair["angular"]) == pytest.approx([distance_row("imp", "r01", "r02", x2, x2 + 0.1)["angular"]] * 2)
    f5 = pd.read_csv(out / "imp_fig5.csv")
    assert f5["setting"].nunique() == 2 and set(f5["round"]) == {3}  # round 10 not reached: the last
    cd = pd.read_csv(out / "dst_fig3_all.csv")
    assert list(cd["criterion"])[-1] == "snip"  # the worst criterion ranks last
    gap = pd.read_csv(out / "dst_fig4.csv").set_index(["density", "epoch"])["loss_gap"]
    assert gap.to_dict() == pytest.approx({(0.1, 29): 0.15, (0.1, 30): 0.25, (0.5, 29): -0.25, (0.5, 30): 0.25})


def test_logged_back_to_the_parents(report: tuple[Path, str]) -> None:
    _, uri = report
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    parents = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    for p in parents:
        names = {Path(a.path).name for a in client.list_artifacts(p.info.run_id, "report")}
        assert {"index.html", "cross_families.png", "cross_families.csv"} <= names


def test_one_parent_and_missing_lines(store: tuple[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    uri, _ = store
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    ep = next(r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "ep")
    assert main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--parent", ep.info.run_id,
                 "--out", str(tmp_path / "r"), "--no-log"]) == 0
    err = capsys.readouterr().err
    assert "dst_fig1: skipped" in err and "run --space dst_quick" in err
    assert "slt_fig3b: skipped" in err and "run --space iep_quick" in err
    assert (tmp_path / "r" / "slt_table1.png").is_file() and not (tmp_path / "r" / "imp_fig1.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "error: --experiment: no MLflow experiment 'nope'"),
    (["--experiment", EXPERIMENT, "--parent", "0" * 32], "error: --parent: no run"),
])
def test_bad_input_one_line_nothing_written(store: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            args: list[str], message: str) -> None:
    uri, _ = store
    out = tmp_path / "out"
    assert main([*args, "--tracking-uri", uri, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
    assert not out.exists()


def test_unwritable_out(store: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri, _ = store
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(blocker / "sub")]) == 2
    assert capsys.readouterr().err.startswith("error: --out:")


def test_served_index_loads_every_image(report: tuple[Path, str]) -> None:
    """--open's server: index.html and every <img> it references come back as PNGs over HTTP.
    (No headless browser can be installed here; this checks what a browser would fetch.)"""
    import base64
    import re
    import urllib.request

    from orchestrator.report.__main__ import start_server

    out, _ = report
    server = start_server(out)
    try:
        base = f"http://127.0.0.1:{server.server_port}/"
        page = urllib.request.urlopen(base + "index.html", timeout=10).read().decode()
        images = re.findall(r'<img src="data:image/png;base64,([^"]+)"[^>]* data-file="([^"]+)"', page)
        assert len(images) == len(EXPECTED)
        for data, src in images:  # inline, and the same PNG beside the page
            png = urllib.request.urlopen(base + src, timeout=10).read()
            assert png.startswith(b"\x89PNG\r\n\x1a\n") and base64.b64decode(data) == png, src
    finally:
        server.shutdown()


def test_storage_without_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["--experiment", EXPERIMENT, "--storage", str(tmp_path / "none"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --storage: no MLflow store") and not out.exists()


def test_overview_names_the_variants_or_the_swept_key(store: tuple[str, Path]) -> None:
    """A variant space: one labelled point per named variant (the space's words), not the batch
    size that happens to differ; a grid space: accuracy against its swept key."""
    from orchestrator.report.collect import load_runs
    from orchestrator.report.cross import overview

    uri, _ = store
    runs = load_runs(uri, EXPERIMENT)
    try:
        by_name = {p.info.run_name: (rid, p) for rid, p in runs.parents.items()}
        tour = overview(runs, *by_name["tour"])
        ax = tour.fig.axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["dense", "dst_rigl", "soft_iep", "ep"]  # by accuracy
        assert "variant" in ax.get_xlabel() and "batch" not in ax.get_xlabel()
        assert set(tour.data["variant"]) == {"dense", "ep", "soft_iep", "dst_rigl"}
        ep = overview(runs, *by_name["ep"])
        ax = ep.fig.axes[0]
        assert ax.get_xlabel() == "k (method.prune_rate)" and list(ax.lines[0].get_xdata()) == [0.2, 0.5]
        assert "dying ratio" in ep.fig.axes[-1].get_ylabel() and ep.fig.axes[-1].lines  # drawn, not a label only
    finally:
        runs.close()


def test_skipped_figures_import_no_torch(store: tuple[str, Path], tmp_path: Path) -> None:
    """A sweep of EP runs only: every DST, IMP and iEP figure is skipped before the metrics that
    need torch are imported (the report of such a sweep never loads it)."""
    import subprocess
    import sys

    uri, _ = store
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    ep = next(r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "ep")
    probe = ("import sys\nfrom orchestrator.report.__main__ import main\n"
             f"code = main(['--experiment', {EXPERIMENT!r}, '--tracking-uri', {uri!r}, '--parent', "
             f"{ep.info.run_id!r}, '--out', {str(tmp_path / 'r')!r}, '--no-log'])\n"
             "print('CODE', code, 'TORCH', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=300)
    assert "CODE 0 TORCH False" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert (tmp_path / "r" / "slt_table1.png").is_file()
