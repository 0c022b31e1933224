"""orchestrator.tracking.tracker against a real local Ray and real MLflow (SQLite file and `mlflow server`).

No mocks: a tiny function trainable reports 3 epochs with checkpoints holding config.json and
masks.parquet; the driver-side callback must turn that into one parent run, one child run per
trial, stepped metric histories and byte-identical artifacts.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from conftest import MlflowServer, fresh_store, local_ray
from orchestrator.tracking.callback import MLflowTrialCallback, iter_child_runs
from orchestrator.tracking.ops import extract_metrics, metric_steps, to_params
from orchestrator.tracking.tags import KIND_TAG, PARENT_TAG, TRIAL_ID_TAG
from orchestrator.tracking.tracker import SweepTracker
from orchestrator.tracking.uris import artifact_root_for, default_tracking_uri, tracking_ui_command

LRS = (0.1, 0.01)
EPOCHS = 3
N_WEIGHTS = 64


# --------------------------------------------------------------------------- trainable


def _masks_table(lr: float, epoch: int) -> pa.Table:
    """Deterministic toy mask per (lr, epoch) so the test knows which checkpoint got logged."""
    keep = [(i * 7 + epoch + int(lr * 100)) % 3 != 0 for i in range(N_WEIGHTS)]
    return pa.table(
        {
            "layer": pa.array(["fc1"] * N_WEIGHTS),
            "index": pa.array(range(N_WEIGHTS), type=pa.int32()),
            "mask": pa.array(keep, type=pa.bool_()),
            "epoch": pa.array([epoch] * N_WEIGHTS, type=pa.int16()),
        }
    )


def _acc(lr: float, epoch: int) -> float:
    return round(0.5 + lr + 0.1 * epoch, 6)


def tiny_trainable(config: dict[str, Any]) -> None:
    """Reports like trainables/tune.py will: metrics per epoch plus a checkpoint directory."""
    from ray import tune

    lr = float(config["lr"])
    for epoch in range(1, EPOCHS + 1):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "config.json").write_text(
                json.dumps({"lr": lr, "epoch": epoch}, sort_keys=True)
            )
            pq.write_table(_masks_table(lr, epoch), Path(d, "masks.parquet"))
            tune.report(
                {
                    "epoch": epoch,
                    "test_acc": _acc(lr, epoch),
                    "dying_ratio": 0.25 / epoch,
                    "converged": epoch == EPOCHS,  # bool: not a metric
                    "loss_nan": float("nan"),  # non-finite: skipped
                    "layer": {"fc1": 0.5 * epoch},  # nested: logged as layer/fc1
                    "note": "text",  # not a number
                },
                checkpoint=tune.Checkpoint.from_directory(d),
            )


def crash_once_trainable(config: dict[str, Any]) -> None:
    """Crashes after epoch 2 on the first attempt; resumes from its checkpoint on restore."""
    from ray import tune

    start = 1
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            start = json.loads(Path(d, "config.json").read_text())["epoch"] + 1
    for epoch in range(start, EPOCHS + 1):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "config.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(
                {"epoch": epoch, "test_acc": epoch / 10},
                checkpoint=tune.Checkpoint.from_directory(d),
            )
        marker = Path(config["marker"])
        if epoch == 2 and not marker.exists():
            marker.write_text("crashed")
            raise RuntimeError("boom after epoch 2")


def rerun_epoch_trainable(config: dict[str, Any]) -> None:
    """Reports epoch 3 without a checkpoint, then crashes: a restore re-runs epoch 3.

    The re-run reports another value at the same step (as a GPU re-run might), so the test can
    tell which one MLflow kept. Cycle metrics come with epoch 2 and 3 (cycles of one epoch).
    """
    from ray import tune

    marker = Path(config["marker"])
    start = 1
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            start = json.loads(Path(d, "config.json").read_text())["epoch"] + 1
    for epoch in range(start, 5):
        value = epoch / 10 + (0.5 if marker.exists() else 0.0)
        metrics = {"epoch": epoch, "cycle": epoch, "test_acc": value, "cycle/test_acc": value}
        if epoch == 3:
            tune.report(metrics)  # no checkpoint: a restore goes back to epoch 2
            if not marker.exists():
                marker.write_text("crashed")
                raise RuntimeError("boom after epoch 3")
            continue
        with tempfile.TemporaryDirectory() as d:
            Path(d, "config.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def resolve_params(config: dict[str, Any]) -> dict[str, Any]:
    """Stand-in for the config tree's flat dotted keys."""
    return {"optimizer.lr": str(config["lr"]), "model.width": "8", "sweep.long": "x" * 7000}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ray_local(mlflow_server: MlflowServer) -> Iterator[None]:
    """One real local Ray for the module (it requests the server only to start it early)."""
    with local_ray(sys.modules[__name__], num_cpus=2):
        yield


# --------------------------------------------------------------------------- pure helpers


def test_uris_and_ui_command(tmp_path: Path) -> None:
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert uri.startswith("sqlite:////")
    assert artifact_root_for(uri, tmp_path) == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert artifact_root_for("http://head:5000", tmp_path) is None
    assert tracking_ui_command(uri, "s1") == \
        f"python -m orchestrator.tracking.ui --storage {tmp_path.resolve()} --sweep s1"
    assert tracking_ui_command("postgresql://h/db") == "mlflow ui --backend-store-uri postgresql://h/db"
    assert tracking_ui_command("http://127.0.0.1:5000") == "open http://127.0.0.1:5000"


def test_extract_metrics_drops_bookkeeping() -> None:
    result = {
        "epoch": 2, "test_acc": 0.9, "flag": True, "nan": math.nan, "inf": math.inf,
        "nested": {"a": 1, "b": "x"}, "training_iteration": 5, "time_total_s": 1.0,
        "timestamp": 1, "done": False, "pid": 1, "config": {"lr": 0.1}, "config/lr": 0.1,
        "iterations_since_restore": 5, "time_since_restore": 1.0, "time_this_iter_s": 0.1,
    }  # fmt: skip
    metrics, step = extract_metrics(result)
    assert metrics == {"test_acc": 0.9, "nested/a": 1.0}  # epoch: the step, not a metric
    assert step == 2
    _, step = extract_metrics({"training_iteration": 7, "x": 1.0})
    assert step == 7


def test_cycle_metrics_are_logged_at_step_cycle() -> None:
    entries = metric_steps({"epoch": 6, "cycle": 2, "test_acc": 0.9, "cycle/test_acc": 0.9,
                            "cycle/dying_ratio": 0.1, "training_iteration": 6})
    assert sorted(entries) == [("cycle", 2.0, 6), ("cycle/dying_ratio", 0.1, 2),
                               ("cycle/test_acc", 0.9, 2), ("test_acc", 0.9, 6)]


# --------------------------------------------------------------------------- integration


def _run_sweep(tracking_uri: str, storage_dir: Path) -> tuple[SweepTracker, Any]:
    from ray import tune

    tracker = SweepTracker(tracking_uri, "tracking-test", storage_dir)
    parent = tracker.start("toy-sweep", {"space": "toy", "grid.lr": list(LRS)}, {"owner": "ci"})
    callback = MLflowTrialCallback(
        tracking_uri, tracker.experiment_id, parent, resolve_params, strict=True
    )
    tuner = tune.Tuner(
        tiny_trainable,
        param_space={"lr": tune.grid_search(list(LRS))},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(
            name="toy",
            storage_path=str(storage_dir / "ray_results"),
            callbacks=[callback],
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert not results.errors
    spec = storage_dir / "sweep.json"
    spec.write_text(json.dumps({"space": "toy"}))
    tracker.log_artifact(spec)
    tracker.finish("FINISHED")
    return tracker, results


def _check_logged(tracker: SweepTracker, results: Any, download_dir: Path) -> None:
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    exp = tracker.experiment_id
    parents = client.search_runs([exp], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    assert [r.info.run_id for r in parents] == [tracker.run_id]
    parent = parents[0]
    assert parent.info.run_name == "toy-sweep"
    assert parent.info.status == "FINISHED"
    assert parent.data.params["space"] == "toy"
    assert parent.data.tags["owner"] == "ci"
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["sweep.json"]

    children = list(iter_child_runs(client, exp, tracker.run_id))
    assert len(children) == len(LRS)
    all_runs = client.search_runs([exp])
    assert len(all_runs) == 1 + len(LRS)  # no stray runs

    by_lr = {r.data.params["optimizer.lr"]: r for r in children}
    assert set(by_lr) == {str(lr) for lr in LRS}
    ckpt_by_lr = {str(r.config["lr"]): r.checkpoint for r in results}
    for lr in LRS:
        run = by_lr[str(lr)]
        rid = run.info.run_id
        assert run.data.tags[PARENT_TAG] == tracker.run_id
        assert run.info.status == "FINISHED"
        assert run.data.params["model.width"] == "8"
        assert len(run.data.params["sweep.long"]) == 6000  # truncated to MLflow's limit
        assert run.info.run_name == run.data.tags["sparsesweep.trial_name"]
        assert run.data.tags[TRIAL_ID_TAG] in run.info.run_name

        hist = client.get_metric_history(rid, "test_acc")
        assert [(m.step, m.value) for m in hist] == [(e, _acc(lr, e)) for e in range(1, EPOCHS + 1)]
        assert [m.step for m in client.get_metric_history(rid, "dying_ratio")] == [1, 2, 3]
        assert [m.value for m in client.get_metric_history(rid, "layer/fc1")] == [0.5, 1.0, 1.5]
        logged = set(run.data.metrics)
        assert {"test_acc", "dying_ratio", "layer/fc1"} <= logged
        assert not logged & {"converged", "loss_nan", "training_iteration", "time_total_s", "note",
                             "epoch", "step"}

        assert sorted(a.path for a in client.list_artifacts(rid)) == ["config.json", "masks"]
        assert [a.path for a in client.list_artifacts(rid, "masks")] == ["masks/masks.parquet"]
        dst = download_dir / rid
        dst.mkdir(parents=True)
        got_cfg = Path(client.download_artifacts(rid, "config.json", str(dst)))
        got_masks = Path(client.download_artifacts(rid, "masks/masks.parquet", str(dst)))
        with ckpt_by_lr[str(lr)].as_directory() as ckpt:
            assert got_cfg.read_bytes() == Path(ckpt, "config.json").read_bytes()
            assert got_masks.read_bytes() == Path(ckpt, "masks.parquet").read_bytes()
        assert pq.read_table(got_masks).equals(_masks_table(lr, EPOCHS))  # the last checkpoint


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_sweep_logged_to_sqlite(ray_local: None, migrated_db: Path, tmp_path: Path) -> None:
    storage = tmp_path / "sweep"
    tracker, results = _run_sweep(fresh_store(migrated_db, storage), storage)
    _check_logged(tracker, results, tmp_path / "dl")
    # Artifacts of a file-backed store live next to the database.
    assert list((storage / "mlartifacts").rglob("masks.parquet"))


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_sweep_logged_to_mlflow_server(
    ray_local: None, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    storage = tmp_path / "sweep"
    tracker, results = _run_sweep(mlflow_server.wait_healthy(), storage)
    _check_logged(tracker, results, tmp_path / "dl")
    # The server proxied the uploads: nothing was written client-side next to the sweep.
    assert not (storage / "mlartifacts").exists()
    # (the server is shared by the session: count this experiment's uploads only)
    uploaded = (mlflow_server.artifacts / tracker.experiment_id).rglob("masks.parquet")
    assert len(list(uploaded)) == len(LRS)


@pytest.mark.integration
def test_child_lookup_is_idempotent_across_restore(migrated_db: Path, tmp_path: Path) -> None:
    uri = fresh_store(migrated_db, tmp_path)
    tracker = SweepTracker(uri, "resume-test", tmp_path)
    parent = tracker.start("s", {"a": 1}, {})
    cb = MLflowTrialCallback(uri, tracker.experiment_id, parent, resolve_params)
    first = cb.writer.find_or_create_child_run("abc12_00000", "toy_abc12_00000", to_params(resolve_params({"lr": 0.1})))
    again = cb.writer.find_or_create_child_run("abc12_00000", "toy_abc12_00000", to_params(resolve_params({"lr": 0.1})))
    # Tune.restore unpickles the callback from tuner.pkl: a fresh instance, empty cache.
    restored = pickle.loads(pickle.dumps(cb))
    after_restore = restored.writer.find_or_create_child_run("abc12_00000", "toy_abc12_00000", to_params(resolve_params({"lr": 0.1})))
    other = restored.writer.find_or_create_child_run("abc12_00001", "toy_abc12_00001", to_params(resolve_params({"lr": 0.01})))
    assert first == again == after_restore
    assert other != first
    client = MlflowClient(tracking_uri=uri)
    assert len(list(iter_child_runs(client, tracker.experiment_id, parent))) == 2
    assert client.get_run(first).data.params["optimizer.lr"] == "0.1"

    # A different sweep (parent) never picks up this sweep's runs.
    tracker2 = SweepTracker(uri, "resume-test", tmp_path)
    parent2 = tracker2.start("s2", {}, {})
    cb2 = MLflowTrialCallback(uri, tracker.experiment_id, parent2, resolve_params)
    assert cb2.writer.find_child_run("abc12_00000") is None

    # The parent re-opens for --resume instead of being duplicated.
    tracker.finish("KILLED")
    resumed = SweepTracker(uri, "resume-test", tmp_path)
    assert resumed.start("s", {"a": 1}, {}, resume_run_id=parent) == parent
    assert client.get_run(parent).info.status == "RUNNING"
    assert len(client.search_runs([tracker.experiment_id], f"tags.`{KIND_TAG}` = 'sweep'")) == 2


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_failed_trial_then_tuner_restore_reuses_its_child_run(
    ray_local: None, migrated_db: Path, tmp_path: Path
) -> None:
    from ray import tune

    storage = tmp_path / "sweep"
    uri = fresh_store(migrated_db, storage)
    tracker = SweepTracker(uri, "crash-resume", storage)
    parent = tracker.start("crash-resume", {}, {})
    callback = MLflowTrialCallback(uri, tracker.experiment_id, parent, resolve_params, strict=True)
    tuner = tune.Tuner(
        crash_once_trainable,
        param_space={"lr": 0.1, "marker": str(tmp_path / "crashed")},
        run_config=tune.RunConfig(
            name="crash",
            storage_path=str(storage / "ray_results"),
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=0,
        ),
    )
    assert len(tuner.fit().errors) == 1
    tracker.finish("KILLED")

    client = MlflowClient(tracking_uri=uri)
    (child,) = iter_child_runs(client, tracker.experiment_id, parent)
    rid = child.info.run_id
    assert child.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(rid, "test_acc")] == [1, 2]
    # a failed trial keeps what its last checkpoint held (e.g. the masks of finished cycles)
    assert [a.path for a in client.list_artifacts(rid)] == ["config.json", "error.txt"]
    text = Path(client.download_artifacts(rid, "error.txt", str(tmp_path))).read_text()
    assert "boom after epoch 2" in text

    # --resume: Tune unpickles RunConfig (our callback included) from tuner.pkl and resumes the
    # errored trial from its epoch-2 checkpoint; the same child run must continue.
    assert (
        SweepTracker(uri, "crash-resume", storage).start("crash-resume", {}, {}, parent) == parent
    )
    restored = tune.Tuner.restore(
        str(storage / "ray_results" / "crash"), crash_once_trainable, resume_errored=True
    )
    assert not restored.fit().errors
    (child,) = iter_child_runs(client, tracker.experiment_id, parent)
    assert child.info.run_id == rid
    assert child.info.status == "FINISHED"
    hist = client.get_metric_history(rid, "test_acc")
    assert [(m.step, m.value) for m in hist] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert sorted(a.path for a in client.list_artifacts(rid)) == ["config.json", "error.txt"]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_rerun_epoch_after_restore_is_logged_once(
    ray_local: None, migrated_db: Path, tmp_path: Path
) -> None:
    from ray import tune

    storage = tmp_path / "sweep"
    uri = fresh_store(migrated_db, storage)
    tracker = SweepTracker(uri, "rerun", storage)
    parent = tracker.start("rerun", {}, {})
    callback = MLflowTrialCallback(uri, tracker.experiment_id, parent, resolve_params, strict=True)
    run_config = tune.RunConfig(name="rerun", storage_path=str(storage / "ray_results"),
                                callbacks=[callback], verbose=0)
    tuner = tune.Tuner(rerun_epoch_trainable,
                       param_space={"lr": 0.1, "marker": str(tmp_path / "crashed")},
                       run_config=run_config)
    assert len(tuner.fit().errors) == 1
    restored = tune.Tuner.restore(str(storage / "ray_results" / "rerun"), rerun_epoch_trainable,
                                  resume_errored=True)
    assert not restored.fit().errors
    client = MlflowClient(tracking_uri=uri)
    (child,) = iter_child_runs(client, tracker.experiment_id, parent)
    rid = child.info.run_id
    # epoch 3 ran twice; the run keeps one value per step: the first one logged
    for key in ("test_acc", "cycle/test_acc"):
        hist = client.get_metric_history(rid, key)
        assert [(m.step, m.value) for m in hist] == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.9)], key


# --------------------------------------------------------------------------- MLflow's UI (issue 11)


def ui_trainable(config: dict[str, Any]) -> None:
    """Reports as trainables.loop does (epoch, step, cycle, cycle_* at cycle ends) with real
    mask files (mask_io format) in every checkpoint: the final mask and one per cycle."""
    import torch
    from ray import tune

    from trainables.sparse.mask_io import write_masks

    k = float(config["method.prune_rate"])
    gen = torch.Generator().manual_seed(int(k * 1000))
    for epoch in (1, 2):
        masks = {"fc1.weight": torch.rand(16, 8, generator=gen) >= k * epoch / 2,
                 "fc2.weight": torch.rand(10, 16, generator=gen) >= k}
        with tempfile.TemporaryDirectory() as d:
            Path(d, "config.json").write_text(json.dumps({"epoch": epoch}))
            write_masks(Path(d, "masks.parquet"), masks)
            for cycle in range(1, epoch + 1):
                write_masks(Path(d, "artifacts", "masks", f"cycle_{cycle:02d}.parquet"), masks)
            acc = 0.5 + k / 10 + epoch / 100
            tune.report({"epoch": epoch, "step": 4 * epoch, "cycle": epoch, "test_acc": acc,
                         "cycle/test_acc": acc, "epoch_time_s": 0.01},
                        checkpoint=tune.Checkpoint.from_directory(d))


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_first_screen_of_mlflow_ui_on_a_server(
    ray_local: None, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """What MLflow's UI shows first, read back through the server's REST API: the experiment
    opens on runs; runs are named by what differs and tagged; the parent's description holds the
    command; dataset and source columns fill; epoch/step are no metrics; a mask figure exists."""
    import urllib.parse
    import urllib.request

    from ray import tune

    from orchestrator.driver import _param_space
    from orchestrator.tracking.labels import SweepLabels, dataset_input
    from search_spaces import get_space, make_plan
    from trainables.config import ExperimentConfig

    uri = mlflow_server.wait_healthy()
    plan = make_plan(get_space("ep_quick"), search="grid", sets={"model.name": "mlp"},
                     grid_overrides={"method.prune_rate": ["0.2", "0.5000"]}, num_samples=1)
    labels = SweepLabels.from_plan(plan, "ui-sweep")
    command = "python -m orchestrator.sweep --name ui-sweep --grid method.prune_rate=0.2,0.5000"
    storage = tmp_path / "sweep"
    tracker = SweepTracker(uri, "ui-test", storage)
    parent = tracker.start("ui-sweep", {"space": "ep_quick", "set.model.name": plan.base["model.name"]},
                           {"sparsesweep.space": "ep_quick", **labels.parent_tags()},
                           run_name=labels.parent_run_name(2), note=labels.parent_note(command, plan),
                           experiment_tags=dict([labels.shared_view("test_acc", "max")]))
    callback = MLflowTrialCallback(uri, tracker.experiment_id, parent,
                                   lambda c: plan.resolve(c).to_flat(), strict=True, labels=labels)
    tuner = tune.Tuner(ui_trainable, param_space=_param_space(plan),
                       tune_config=tune.TuneConfig(max_concurrent_trials=2),
                       run_config=tune.RunConfig(name="ui", storage_path=str(storage / "ray_results"),
                                                 callbacks=[callback], verbose=0))
    assert not tuner.fit().errors
    tracker.finish("FINISHED")

    def rest(endpoint: str, **query: str) -> bytes:
        with urllib.request.urlopen(f"{uri}{endpoint}?{urllib.parse.urlencode(query)}", timeout=10) as r:
            return r.read()

    exp = json.loads(rest("/api/2.0/mlflow/experiments/get", experiment_id=tracker.experiment_id))
    exp_tags = {t["key"]: t["value"] for t in exp["experiment"]["tags"]}
    assert exp_tags["mlflow.experimentKind"] == "custom_model_development"  # runs tab, not GenAI
    view = json.loads(exp_tags["mlflow.sharedViewState.sweep-ui-sweep"])  # ?viewStateShareKey=
    assert view["searchFilter"] == ("tags.`sparsesweep.sweep_name` = 'ui-sweep' and "
                                    "tags.`sparsesweep.kind` = 'trial'")
    assert view["selectedColumns"][:3] == ["tags.`sparsesweep.method`", "metrics.`test_acc`", "metrics.`density`"]
    assert "params.`method.prune_rate`" in view["selectedColumns"]
    assert view["orderByKey"] == "metrics.`test_acc`" and view["orderByAsc"] is False
    assert len(client_search := MlflowClient(tracking_uri=uri).search_runs(
        [tracker.experiment_id], view["searchFilter"])) == 2, client_search  # the view's filter parses

    client = MlflowClient(tracking_uri=uri)
    top = client.get_run(parent)
    assert top.info.run_name == "ep_quick/ui-sweep (grid; k; 2 trials)"
    assert f"```\n{command}\n```" in top.data.tags["mlflow.note.content"]
    assert "`method.prune_rate`: 0.2, 0.5" in top.data.tags["mlflow.note.content"]
    assert {k: top.data.tags[k] for k in ("sparsesweep.family", "sparsesweep.method",
                                          "sparsesweep.space", "sparsesweep.sweep_name")} == {
        "sparsesweep.family": "strong_lottery", "sparsesweep.method": "ep",
        "sparsesweep.space": "ep_quick", "sparsesweep.sweep_name": "ui-sweep"}

    children = list(iter_child_runs(client, tracker.experiment_id, parent))
    by_name = {r.info.run_name: r for r in children}
    assert sorted(by_name) == ["ep/k=0.2/seed=0", "ep/k=0.5/seed=0"]
    assert len({r.data.tags["mlflow.runColor"] for r in children}) == 2  # one colour each
    for name, run in by_name.items():
        rid, tags, params = run.info.run_id, run.data.tags, run.data.params
        flat = plan.resolve({**plan.base, "method.prune_rate": float(name.split("=")[1][:3])}).to_flat()
        assert {tags[k] for k in ("sparsesweep.family", "sparsesweep.method", "sparsesweep.space",
                                  "sparsesweep.sweep_name", "sparsesweep.swept")} == {
            "strong_lottery", "ep", "ep_quick", "ui-sweep", "method.prune_rate"}
        assert tags["mlflow.source.name"] == "python -m orchestrator.sweep"
        assert tags["mlflow.source.type"] == "LOCAL"
        # params: the whole config, one text per value (numbers parse, bools are True/False)
        assert params["method.prune_rate"] == name.split("=")[1].split("/")[0]
        assert ExperimentConfig.from_flat(params).to_flat() == flat
        assert {params[k] for k in ("data.augment", "run.deterministic")} <= {"True", "False"}
        # metrics: measured values only; the epoch is the step
        assert not {"epoch", "step", "training_iteration", "time_total_s"} & set(run.data.metrics)
        assert [m.step for m in client.get_metric_history(rid, "test_acc")] == [1, 2]
        # the Dataset column
        (ds,) = run.inputs.dataset_inputs
        want = dataset_input(flat)
        assert (ds.dataset.name, ds.dataset.digest, ds.dataset.source_type) == (
            "digits", want["digest"], "local")
        assert json.loads(ds.dataset.source)["uri"].endswith("digits.csv.gz")
        assert [(t.key, t.value) for t in ds.tags] == [("mlflow.data.context", "training")]
        # the mask figure, next to the Parquet masks, as the UI's artifact view fetches it
        assert {a.path for a in client.list_artifacts(rid, "masks")} == {
            "masks/masks.parquet", "masks/cycle_01.parquet", "masks/cycle_02.parquet",
            "masks/density.png"}
        png = rest("/get-artifact", path="masks/density.png", run_uuid=rid)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and 2_000 < len(png) < 200_000
    # the UI's search box: every run of the family, parent included
    found = client.search_runs([tracker.experiment_id], "tags.`sparsesweep.family` = 'strong_lottery'")
    assert len(found) == 3


# --------------------------------------------------------------------------- a new SQLite store


def test_new_sqlite_store_is_a_copy_of_the_cached_empty_one(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.tracking.sqlite_store import empty_store, seed_sqlite_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = tmp_path / "a" / "runs"
    tracker = SweepTracker(default_tracking_uri(first), "exp", first)  # makes the cache, then copies it
    cached = empty_store()
    made = cached.stat().st_mtime_ns
    assert cached.parent == tmp_path / "cache" / "sparsesweep"
    assert tracker.client.get_experiment_by_name("exp") is not None
    second = tmp_path / "b" / "runs"
    second.mkdir(parents=True)
    assert seed_sqlite_store(second / "mlflow.db")
    assert (second / "mlflow.db").read_bytes() == cached.read_bytes()
    assert cached.stat().st_mtime_ns == made  # made once
    client = MlflowClient(tracking_uri=default_tracking_uri(second))
    assert [e.name for e in client.search_experiments()] == ["Default"]  # empty, and MLflow opens it
    # an existing store is never replaced
    assert not seed_sqlite_store(first / "mlflow.db")
    assert MlflowClient(tracking_uri=default_tracking_uri(first)).get_experiment_by_name("exp") is not None


def test_unwritable_cache_leaves_the_store_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.tracking.sqlite_store import seed_sqlite_store

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    storage = tmp_path / "runs"
    storage.mkdir()
    assert not seed_sqlite_store(storage / "mlflow.db")
    assert not list(storage.iterdir())  # no half-written file
    tracker = SweepTracker(default_tracking_uri(storage), "exp", storage)
    assert tracker.client.get_experiment_by_name("exp") is not None
