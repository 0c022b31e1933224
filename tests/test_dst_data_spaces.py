"""The Higgs-layout tabular loader (on a small generated file) and the DST search spaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import torch

from search_spaces import REGISTRY, make_plan
from search_spaces.dst import FIG1_DENSITIES, UPDATE_PERIODS
from trainables.config import ConfigError, DataConfig, ExperimentConfig
from trainables.data import load_data
from trainables.loop import run_experiment


def _higgs_table(rows: int = 400, features: int = 24, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32) * 3 + 1
    y = (x[:, 0] + 0.5 * x[:, 1] > 1).astype(np.int64)  # learnable from the features
    cols = {f"f{i}": x[:, i] for i in range(features)}
    return pa.table({"target": y, **cols})  # label first, as OpenML's files often have it


def _write(tmp: Path, table: pa.Table, fmt: str = "parquet") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, tmp / "higgs.parquet")
    else:
        pcsv.write_csv(table, tmp / "higgs.csv")
    return tmp


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_higgs_layout_loads_split_70_15_15_and_standardised(tmp_path: Path, fmt: str) -> None:
    root = _write(tmp_path, _higgs_table(), fmt)
    data = load_data(DataConfig(dataset="higgs", data_dir=str(root)), progress=False)
    assert data.train_x.shape == (280, 24, 1, 1) and data.test_x.shape == (60, 24, 1, 1)
    assert data.num_classes == 2 and set(data.train_y.tolist()) == {0, 1}
    x = data.normalise(data.train_x).view(280, 24)
    assert torch.allclose(x.mean(0), torch.zeros(24), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(24), atol=1e-4)
    # same file, same split
    again = load_data(DataConfig(dataset="higgs", data_dir=str(root)), progress=False)
    assert torch.equal(again.test_x, data.test_x)


def test_dst_trains_the_small_mlp_on_higgs(tmp_path: Path) -> None:
    root = _write(tmp_path, _higgs_table(rows=800))
    cfg = ExperimentConfig.from_flat({
        "method.name": "dst", "data.dataset": "higgs", "data.data_dir": str(root), "model.name": "mlp_small",
        "data.batch_size": 32, "schedule.epochs": 4, "optim.lr": 0.05, "method.update_period": 10,
        "method.density": 0.1, "method.distribution": "er", "method.growth": "gradient"})
    metrics = run_experiment(cfg)
    assert metrics["updates"] > 0 and metrics["test_acc"] > 0.7  # above chance on a learnable target
    assert metrics["density"] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize(("table", "pattern"), [
    (_higgs_table(features=23), "has 23 feature columns, higgs has 24"),
    (_higgs_table().rename_columns(["y", *[f"f{i}" for i in range(24)]]), "needs exactly one label column"),
])
def test_bad_tabular_files_are_one_line_errors(tmp_path: Path, table: pa.Table, pattern: str) -> None:
    root = _write(tmp_path, table)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_data(DataConfig(dataset="higgs", data_dir=str(root)), progress=False)
    assert "\n" not in str(info.value)


def test_tabular_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.data_dir: dataset higgs not found, missing .*higgs.parquet"):
        load_data(DataConfig(dataset="higgs", data_dir=str(tmp_path)), progress=False)
    with pytest.raises(ConfigError, match="higgs is tabular; use one of mlp, mlp_small, mlp_large, not conv4"):
        ExperimentConfig.from_flat({"data.dataset": "higgs", "data.data_dir": str(tmp_path), "model.name": "conv4"})


def test_dst_spaces_hold_the_papers_setups() -> None:
    crit = REGISTRY["dst_criteria"]
    assert set(FIG1_DENSITIES) == {0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5}
    assert len(crit.variants) == 5 * 2 * 11 + 11 + 1
    assert crit.variants["static d=0.05"] == {"method.density": 0.05, "method.update_period": 0}
    assert crit.variants["dense"] == {"method.density": 1.0, "method.update_period": 0}
    assert UPDATE_PERIODS == (25, 50, 100, 200, 400, 800, 1600, 3200, 6400)
    period = REGISTRY["dst_update_period"]
    assert len(period.variants) == 5 * 2 * 2 * 9 + 2 + 1
    for name in ("dst_criteria", "dst_update_period"):
        assert {"method.update_period", "method.prune_fraction", "method.mest_lambda"} <= set(REGISTRY[name].optuna)
    quick = REGISTRY["dst_quick"]
    assert len(quick.variants) == 7 * 2 * 4 + 4 + 1
    cfg = ExperimentConfig.from_flat(dict(crit.base) | {"data.data_dir": "/nowhere"})
    assert (cfg.optim.nesterov, cfg.schedule.name, cfg.schedule.milestone_fractions) == (True, "step", (0.5, 0.75))
    assert (cfg.method.prune_fraction, cfg.method.update_period, cfg.model.name) == (0.5, 800, "mlp_large")


@pytest.mark.parametrize("name", ["dst_quick", "dst_criteria", "dst_update_period", "dst_mest_lambda",
                                  "dst_batch_size", "dst_schedule", "dst_global_local"])
def test_every_dst_space_validates_each_trial(name: str) -> None:
    sets = {} if name == "dst_quick" else {"data.dataset": "digits", "model.name": "mlp"}
    plan = make_plan(REGISTRY[name], search="grid", sets=sets, grid_overrides={}, num_samples=2)
    assert len(plan.points()) == 2 * REGISTRY[name].grid_size()
    opt = make_plan(REGISTRY[name], search="optuna", sets={**sets, "schedule.epochs": 20}, grid_overrides={},
                    num_samples=3)
    assert opt.optuna_space
