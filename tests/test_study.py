"""The Optuna study of `--search optuna`: each sampler through Ray Tune's OptunaSearch into an
RDB (SQLite) storage, and `--resume` continuing the same stored study without re-sampling
the trials that had finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from orchestrator.settings import SweepLayout
from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG
from orchestrator.tuner.study import (
    SAMPLERS,
    load_study,
    make_sampler,
    make_searcher,
)
from search_spaces import get_space, make_plan

ROOT = Path(__file__).resolve().parents[1]
SAMPLER_TYPES = {"tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler,
                 "random": optuna.samplers.RandomSampler, "cmaes": optuna.samplers.CmaEsSampler}


@pytest.mark.parametrize("name", SAMPLERS)
def test_each_sampler_asks_and_tells_through_tune_into_the_rdb(tmp_path: Path, name: str) -> None:
    assert isinstance(make_sampler(name, seed=0), SAMPLER_TYPES[name])
    plan = make_plan(get_space("ep_quick"), search="optuna", sets={}, grid_overrides={}, num_samples=3)
    url = SweepLayout(str(tmp_path), "sweep").default_study_url()
    searcher = make_searcher(plan, sampler=name, seed=0, storage_url=url, study_name="s",
                             metric="test_acc", mode="max")
    for i in range(3):
        config = searcher.suggest(f"t{i}")
        assert 0.2 <= config["method.prune_rate"] <= 0.9 and 0.01 <= config["optim.lr"] <= 0.5
        searcher.on_trial_complete(f"t{i}", {"test_acc": config["method.prune_rate"], "training_iteration": 1})
    study = load_study(url, "s")  # read back from the SQLite file, not the searcher's memory
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert url == f"sqlite:///{(tmp_path / 'tune' / 'sweep' / 'optuna.db').resolve()}"


def _completed(url: str, name: str) -> int:
    try:
        return sum(t.state == optuna.trial.TrialState.COMPLETE for t in load_study(url, name).trials)
    except Exception:  # noqa: BLE001 - the study does not exist yet
        return 0


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_resume_continues_the_stored_study(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    args = ["--space", "ep_quick", "--storage", str(storage), "--name", "opt", "--experiment", "opt", "--search", "optuna",
            "--sampler", "tpe", "--num-samples", "4", "--max-concurrent", "1", "--num-cpus", "2",
            "--set", "schedule.epochs=12", "--set", "run.max_steps_per_epoch=3", "--set", "data.batch_size=32"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    url = SweepLayout(str(storage), "opt").default_study_url()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    first = subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    # The interrupt lands while the third trial trains, or before Optuna has suggested it: both
    # leave a sweep to resume (the second once ended with exit 0, as if the sweep were complete)
    while _completed(url, "opt") < 2:  # two trials done, the third under way
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "no two trials finished"
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, (out[-2000:], err[-2000:])
    before = {t.number: t.params for t in load_study(url, "opt").trials
              if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(before) >= 2

    resumed = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "--storage", str(storage), "--resume"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, (resumed.stdout[-3000:], resumed.stderr[-3000:])
    study = load_study(url, "opt")
    assert len(study.trials) == 4, "the resumed sweep asked for more than its --num-samples"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    after = {t.number: t.params for t in study.trials}
    assert all(after[n] == params for n, params in before.items())  # finished trials kept as they were
    points = [tuple(sorted(p.items())) for p in after.values()]
    assert len(set(points)) == 4, "a finished trial's parameters were sampled again"

    client = MlflowClient(tracking_uri=f"sqlite:///{storage.resolve()}/mlflow.db")
    exp = client.get_experiment_by_name("opt")
    (parent,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    children = list(iter_child_runs(client, exp.experiment_id, parent.info.run_id))
    assert len(children) == 4
    logged = {round(float(c.data.params["method.prune_rate"]), 9) for c in children}
    assert logged == {round(p["method.prune_rate"], 9) for p in after.values()}
    for child in children:  # no trial trained (and logged) an epoch twice
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
        assert steps == list(range(1, 13)), steps  # every one of the 12 epochs, once


def test_reading_a_study_never_writes_its_database(tmp_path: Path) -> None:
    """A reader polling a study the sweep is still creating must not stamp the schema itself:
    both would insert Optuna's alembic row, and the sweep died of it once (CI). Checked on an
    absent file and on tables created but not yet stamped (the sweep's mid-creation state)."""
    import sqlite3

    db = tmp_path / "optuna.db"
    with pytest.raises(LookupError):
        load_study(f"sqlite:///{db}", "s")
    assert not db.exists()
    optuna.storages.RDBStorage(f"sqlite:///{db}")  # the full schema, stamped
    with sqlite3.connect(db) as con:  # back to the moment between create_all and the stamps
        con.execute("delete from alembic_version")
        con.execute("delete from version_info")
    with pytest.raises(LookupError):
        load_study(f"sqlite:///{db}", "s")
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from alembic_version").fetchone()[0] == 0
        assert con.execute("select count(*) from version_info").fetchone()[0] == 0
