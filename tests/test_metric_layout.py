"""What MLflow gets from a trial's reports (`orchestrator.tracking.ops.metric_steps`, the step of
every metric): per-cycle metrics at step = the cycle or round a reader would say, IMP's reinit
baseline at the same steps under its own names, dense runs with a density, and no quantity
under two names."""

from __future__ import annotations

from itertools import combinations

import pytest

from orchestrator.tracking.ops import metric_steps
from trainables.config import ExperimentConfig
from trainables.keys import (
    CYCLE_PREFIX,
    CYCLE_REINIT_TEST_ACC,
    CYCLE_REINIT_TRAIN_ACC,
    CYCLE_TEST_ACC,
)
from trainables.loop import run_experiment

TINY = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "32", "data.batch_size": 64,
        "run.max_steps_per_epoch": 3, "schedule.epochs": 2, "optim.lr": 0.1, "optim.momentum": 0.9,
        "run.device": "cpu"}
RUNS = {
    "imp": {"method.name": "imp", "method.rounds": 3, "method.reinit_baseline": True, "method.lmc": True,
            "method.lmc_points": 3},
    "iep": {"method.name": "iep", "method.cycles": 3, "method.shrinkage": 0.3, "method.pruning": "hard"},
    "ep": {"method.name": "edge_popup", "method.prune_rate": 0.5},
    "dst": {"method.name": "dst", "method.density": 0.3, "method.update_period": 2},
    "dense": {"method.name": "dense"},
    "dense_lrr": {"method.name": "dense_lrr", "method.cycles": 3, "method.shrinkage": 0.5},
}


def logged(method: str) -> dict[str, dict[int, float]]:
    """key -> {step: value} as the tracking callback logs them (a step's first value kept)."""
    reports: list[dict] = []
    run_experiment(ExperimentConfig.from_flat({**TINY, **RUNS[method]}), reporter=lambda m, _: reports.append(dict(m)))
    series: dict[str, dict[int, float]] = {}
    for r in reports:
        for key, value, step in metric_steps(r):
            series.setdefault(key, {}).setdefault(step, value)
    return series


@pytest.fixture(scope="module", params=list(RUNS))
def run(request: pytest.FixtureRequest) -> tuple[str, dict[str, dict[int, float]]]:
    return request.param, logged(request.param)


def test_imp_rounds_at_step_round_with_the_reinit_beside() -> None:
    series = logged("imp")
    assert sorted(series[CYCLE_TEST_ACC]) == [1, 2, 3]  # R = 3 rounds, steps 1..R
    assert sorted(series[CYCLE_REINIT_TEST_ACC]) == [2, 3]  # round 1 is dense: no reinit
    assert sorted(series[CYCLE_REINIT_TRAIN_ACC]) == [2, 3]  # both arms' train accuracy
    assert sorted(series["cycle/train_acc"]) == [1, 2, 3]
    assert sorted(series["cycle/copy_test_acc"]) == [1, 2, 3]
    assert series["cycle/density"][3] == pytest.approx(0.64, abs=0.01)
    # the reinit arm's epochs are its own curve: per-epoch test_acc is IMP's training only
    epochs = sorted(series["test_acc"])
    assert len(epochs) == 3 * 2 and set(series["reinit_test_acc"]).isdisjoint(epochs)
    for gone in ("cycle/round", "cycle/remaining_ratio", "cycle/sparsity", "cycle/prune_threshold"):
        assert gone not in series


def test_dense_logs_density_one(run: tuple[str, dict[str, dict[int, float]]]) -> None:
    method, series = run
    assert "density" in series or method == "dst" and "itop" in series, method
    if method == "dense":
        assert set(series["density"].values()) == {1.0} and series["cycle/density"] == {1: 1.0}


def test_cycle_metrics_are_grouped_and_counted_as_a_reader_would(run: tuple[str, dict[str, dict[int, float]]]) -> None:
    method, series = run
    cycles = {"imp": 3, "iep": 3, "dense_lrr": 4}.get(method, 1)  # dense LRR: a dense cycle, then 3
    cycle_keys = [k for k in series if k.startswith(CYCLE_PREFIX)]
    assert cycle_keys and all(sorted(series[k])[-1] <= cycles for k in cycle_keys), method
    assert not any(k.startswith("cycle_") for k in series), method  # one prefix: "cycle/"


def test_no_quantity_under_two_names(run: tuple[str, dict[str, dict[int, float]]]) -> None:
    """Two keys whose histories are equal (or complements, x and 1 - x) at the same steps log one
    quantity twice; constant series (0.0 everywhere) are left out: equal by coincidence."""
    method, series = run
    varying = {k: v for k, v in series.items() if len(set(v.values())) > 1}
    for (a, sa), (b, sb) in combinations(sorted(varying.items()), 2):
        if sa.keys() != sb.keys():
            continue
        assert any(sa[s] != pytest.approx(sb[s], abs=1e-9) for s in sa), f"{method}: {a} == {b}"
        assert any(sa[s] != pytest.approx(1 - sb[s], abs=1e-9) for s in sa), f"{method}: {a} == 1 - {b}"
