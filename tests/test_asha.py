"""Early stopping with `--scheduler asha`: rungs in epochs or at cycle ends, and stopped trials
recorded as stopped (not failed) in Tune's results, MLflow and the results tables.

The unit tests drive Ray Tune's own ASHAScheduler with Tune's own Trial objects (no cluster
needed); the integration test runs a real sweep on a real local Ray and SQLite MLflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from conftest import local_ray
from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG, STOPPED_TAG
from orchestrator.tuner.asha import CycleASHA, RungState, StopMarker, build_scheduler
from orchestrator.tuner.schedulers import describe_stops, stop_tag, stopped_at, time_unit
from search_spaces import get_space, make_plan

ROOT = Path(__file__).resolve().parents[1]


def trials(n: int, config: dict | None = None) -> list[Trial]:
    return [Trial("trial", stub=True, trial_id=f"t{i}", config=dict(config or {})) for i in range(n)]


def test_unit_is_cycles_when_every_trial_iterates() -> None:
    iterative = make_plan(get_space("iep_quick"), search="grid", sets={}, grid_overrides={}, num_samples=1)
    single = make_plan(get_space("ep_quick"), search="grid", sets={}, grid_overrides={}, num_samples=1)
    assert time_unit(iterative) == "cycle" and time_unit(single) == "epoch"
    scheduler, marker = build_scheduler(iterative, grace_period=2, reduction_factor=3)
    assert isinstance(scheduler, CycleASHA) and marker.unit == "cycle"
    assert scheduler._max_t == 8 and scheduler._time_attr == "cycle"  # iep_quick: 8 cycles
    scheduler, marker = build_scheduler(single, grace_period=None, reduction_factor=None)
    assert type(scheduler) is ASHAScheduler and scheduler._max_t == 15 and marker.unit == "epoch"


def test_cycle_rungs_judge_only_cycle_ends() -> None:
    scheduler = CycleASHA(time_attr="cycle", max_t=4, grace_period=1, reduction_factor=2,
                          stop_last_trials=False)
    scheduler.set_search_properties("test_acc", "max")
    a, b, c = trials(3)
    for t in (a, b, c):
        scheduler.on_trial_add(None, t)
    # Mid-cycle results (no cycle_test_acc) never reach a rung, however bad.
    assert scheduler.on_trial_result(None, b, {"cycle": 2, "epoch": 3, "test_acc": 0.0}) == TrialScheduler.CONTINUE
    end = {"cycle": 1, "epoch": 2}
    assert scheduler.on_trial_result(None, a, {**end, "test_acc": 0.9, "cycle/test_acc": 0.9}) == "CONTINUE"
    assert scheduler.on_trial_result(None, b, {**end, "test_acc": 0.2, "cycle/test_acc": 0.2}) == "STOP"
    assert scheduler.on_trial_result(None, c, {**end, "test_acc": 0.95, "cycle/test_acc": 0.95}) == "CONTINUE"


def test_marker_records_a_stop_before_the_end_only() -> None:
    marker = StopMarker("cycle", lambda config: config["cycles"])
    (trial,) = trials(1, {"cycles": 3})
    stopped = {"done": True, "cycle": 1, "epoch": 2}
    marker.on_trial_result(0, [trial], trial, stopped)
    assert stopped["stopped_at_cycle"] == 1 and stopped_at(stopped) == ("cycle", 1)
    assert stop_tag(stopped) == "cycle 1"
    last = {"done": True, "cycle": 3, "epoch": 6}  # reached its end: not a stop
    ongoing = {"done": False, "cycle": 1, "epoch": 1}
    for result in (last, ongoing):
        marker.on_trial_result(0, [trial], trial, result)
        assert stopped_at(result) is None and stop_tag(result) is None


def test_describe_stops() -> None:
    assert describe_stops([None, None], 2) is None
    assert describe_stops([("epoch", 3), None, ("epoch", 1), ("epoch", 1)], 4) == (
        "ASHA stopped 3 of 4 trials early: 2 at epoch 1, 1 at epoch 3")


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_asha_sweep_records_stopped_trials(tmp_path: Path) -> None:
    """A dense sweep with ASHA: the first (good) trial trains to the end, the two that barely
    learn are stopped at the first rung. Stopped runs are FINISHED in MLflow with a stopped
    tag; the tables say STOPPED at epoch 1; dense shows no mask warnings and no dying-ratio
    columns; the trial table is also Parquet, logged to the parent run."""
    storage = tmp_path / "runs"
    args = ["--space", "dense_quick", "--storage", str(storage), "--name", "asha", "--experiment", "asha",
            "--scheduler", "asha", "--grace-period", "1", "--reduction-factor", "2",
            "--grid", "optim.lr=0.05,0.0000001,0.00000001", "--max-concurrent", "1", "--num-cpus", "2",
            "--set", "schedule.epochs=3", "--set", "run.max_steps_per_epoch=10", "--set", "data.batch_size=32"]
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=380, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "ASHA stopped 2 of 3 trials early: 2 at epoch 1" in proc.stdout
    assert "masks.parquet" not in proc.stderr  # dense training has no mask to miss
    header = next(line for line in proc.stdout.splitlines() if line.strip().startswith("trial "))
    assert "dying_ratio" not in header and "k_minus_dying" not in header and "stopped_at" in header

    sweep_dir = storage / "tune" / "asha"
    table = pd.read_csv(sweep_dir / "results.csv")
    assert sorted(table["status"]) == ["OK", "STOPPED", "STOPPED"]
    assert set(table.loc[table["status"] == "STOPPED", "stopped_at"]) == {"epoch 1"}
    full = pd.read_parquet(sweep_dir / "results.parquet")
    assert len(full) == 3 and full["node_id"].notna().all()
    assert {"optim.lr", "model.name", "test_acc", "epoch", "status", "stopped_at"} <= set(full.columns)
    good = full[full["optim.lr"] == 0.05].iloc[0]
    assert good["status"] == "OK" and good["epoch"] == 3

    client = MlflowClient(tracking_uri=f"sqlite:///{storage.resolve()}/mlflow.db")
    exp = client.get_experiment_by_name("asha")
    (parent,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    assert {"results.csv", "results.parquet"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = list(iter_child_runs(client, exp.experiment_id, parent.info.run_id))
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    stopped = [c for c in children if STOPPED_TAG in c.data.tags]
    assert len(stopped) == 2
    for run in stopped:
        assert run.data.tags[STOPPED_TAG] == "epoch 1"
        assert run.data.tags.get("sparsesweep.status") == "stopped"
        assert run.data.metrics["stopped_at_epoch"] == 1
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [1]


# --------------------------------------------------------------------------- --resume keeps the rungs


def test_rung_state_round_trips_through_a_fresh_scheduler() -> None:
    def asha() -> ASHAScheduler:
        s = ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2, stop_last_trials=False)
        s.set_search_properties("score", "max")
        return s

    first = asha()
    a, b, c = trials(3)
    for t, score in ((a, 0.5), (b, 0.9)):
        first.on_trial_add(None, t)
        assert first.on_trial_result(None, t, {"epoch": 1, "score": score}) == "CONTINUE"
    state = RungState(first).get_state()
    fresh = asha()
    fresh.on_trial_add(None, c)
    # what a restored sweep without the state does: nothing to compare with, c runs on
    assert fresh.on_trial_result(None, c, {"epoch": 1, "score": 0.0}) == "CONTINUE"
    restored = asha()
    RungState(restored).set_state(state)
    restored.on_trial_add(None, c)
    assert restored.on_trial_result(None, c, {"epoch": 1, "score": 0.0}) == "STOP"  # below the median of 0.5, 0.9, 0.0
    assert RungState(restored).get_state()["rungs"] != state["rungs"]  # c recorded now


def crash_once_trainable(config: dict) -> None:
    """Scores `x` at every epoch; the x = 0 trial crashes once, before its first report."""
    from ray import tune

    for epoch in range(1, 5):
        if config["x"] == 0.0 and not Path(config["flag"]).exists():
            Path(config["flag"]).write_text("crashed")
            raise RuntimeError("crash once")
        tune.report({"score": config["x"], "epoch": epoch})


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    with local_ray(sys.modules[__name__], num_cpus=1):
        yield


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_restored_sweep_keeps_asha_rungs(ray_local: None, tmp_path: Path) -> None:
    """Real Tune: two trials (0.5, then 0.9: neither below its rung's median) fill rung 1, the
    third crashes before its first report and the sweep ends; `Tuner.restore` re-runs it, and
    ASHA stops it at rung 1 as the uninterrupted sweep would have (with the rungs lost it would
    train all 4 epochs)."""
    from ray import tune

    scheduler = ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2, stop_last_trials=False)
    callbacks = [RungState(scheduler)]  # without it the x = 0 trial trains all 4 epochs (checked)
    flag = str(tmp_path / "flag")
    tuner = tune.Tuner(crash_once_trainable,
                       param_space={"x": tune.grid_search([0.5, 0.9, 0.0]), "flag": flag},
                       tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler,
                                                   max_concurrent_trials=1),
                       run_config=tune.RunConfig(name="rungs", storage_path=str(tmp_path), callbacks=callbacks,
                                                 verbose=0))
    first = tuner.fit()
    assert len(first.errors) == 1
    restored = tune.Tuner.restore(str(tmp_path / "rungs"), trainable=crash_once_trainable, resume_errored=True)
    results = restored.fit()
    assert not results.errors
    epochs = {r.config["x"]: r.metrics["epoch"] for r in results}
    assert epochs == {0.5: 4, 0.9: 4, 0.0: 1}, epochs
