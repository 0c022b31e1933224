"""orchestrator.tracking.labels: run names, tags, the redacted command line, the mask figure, and
the same names/tags/inputs/figure written by `--sync-mlflow` (a real SQLite MLflow store).

The live path (Tune callback, a real `mlflow server`) is tests/test_tracking.py's
test_first_screen_of_mlflow_ui_on_a_server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import fresh_store
from orchestrator.cluster.security import redact, redact_command
from orchestrator.tracking.labels import (
    RUN_COLORS,
    SweepLabels,
    dataset_input,
    mask_files,
    param_text,
    trial_note,
    trial_number,
)
from orchestrator.tracking.ops import (
    DEFAULT_ARTIFACT_FILES,
    checkpoint_files,
    extract_metrics,
    has_mask_figure,
)
from orchestrator.tracking.sync import TuneTrial, trial_ops
from orchestrator.tracking.tracker import SweepTracker
from orchestrator.tracking.views import view_url
from orchestrator.tracking.writer import MlflowWriter
from search_spaces import get_space, make_plan
from trainables.checkpoint_io import verify_checkpoint, write_manifest
from trainables.config import ExperimentConfig
from trainables.mask_figure import MASK_FIGURE, render_mask_figure
from trainables.sparse.mask_io import write_masks

PNG = b"\x89PNG\r\n\x1a\n"


def _names(plan, labels: SweepLabels) -> list[str]:
    return [labels.run_name(p, plan.resolve(p).to_flat(), f"ab12c_{i:05d}")
            for i, p in enumerate(plan.points())]


def test_run_names_say_what_differs_and_are_unique() -> None:
    plan = make_plan(get_space("ep_quick"), search="grid", sets={}, grid_overrides={}, num_samples=2)
    labels = SweepLabels.from_plan(plan, "ep_quick-grid-1")
    names = _names(plan, labels)
    assert sorted(names) == sorted(f"ep/k={k}/seed={s}" for k in ("0.2", "0.488", "0.738") for s in (0, 1))
    assert labels.parent_run_name(6) == "ep_quick-grid-1 (grid; k; 6 trials)"

    # variants come first, after the method (soft/hard iEP told apart)
    plan = make_plan(get_space("iep_quick"), search="grid", sets={}, grid_overrides={}, num_samples=1)
    names = _names(plan, SweepLabels.from_plan(plan, "x"))
    assert names == ["soft_iep/ep/seed=0", "hard_iep/hard_lr/seed=0", "soft_iep/soft_lr/seed=0"]

    # a grid listing a value twice still gets unique names; so does Optuna (3 digits + #N)
    plan = make_plan(get_space("ep_quick"), search="grid", sets={},
                     grid_overrides={"method.prune_rate": ["0.5", "0.50"]}, num_samples=1)
    names = _names(plan, SweepLabels.from_plan(plan, "x"))
    assert names == ["ep/k=0.5/seed=0 #0", "ep/k=0.5/seed=0 #1"]
    plan = make_plan(get_space("ep_quick"), search="optuna", sets={}, grid_overrides={}, num_samples=4)
    labels = SweepLabels.from_plan(plan, "opt")
    point = {**plan.base, "method.prune_rate": 0.523456, "optim.lr": 0.0123456}
    assert labels.run_name(point, plan.resolve(point).to_flat(), "ab12c_00003") == \
        "ep/k=0.523/lr=0.0123/seed=0 #3"
    assert labels.parent_run_name(4) == "ep_quick/opt (optuna; k, lr; 4 trials)"


def test_tags_family_colour_and_parent_note() -> None:
    plan = make_plan(get_space("imp_quick"), search="grid", sets={}, grid_overrides={}, num_samples=1)
    labels = SweepLabels.from_plan(plan, "imp-1")
    flat = plan.resolve(plan.points()[0]).to_flat()
    tags = labels.trial_tags(flat, "ab12c_00011", plan.points()[0])
    assert tags["sparsesweep.family"] == "imp" and tags["sparsesweep.method"] == "imp"
    assert tags["sparsesweep.space"] == "imp_quick" and tags["sparsesweep.sweep_name"] == "imp-1"
    assert tags["sparsesweep.swept"] == "variant" and tags["sparsesweep.variant"] == "imp/bs16"
    # the child's description, one line: until it ends, then with its result
    assert tags["mlflow.note.content"] == "imp, 8 rounds, running"
    assert trial_note(flat, {"density": 0.2097152, "test_acc": 0.97}) == \
        "imp, 8 rounds, density 0.21, final test accuracy 0.9700"
    assert tags["mlflow.runColor"] == RUN_COLORS[11 % len(RUN_COLORS)]
    assert trial_number("ab12c_00011") == 11
    assert labels.parent_tags()["sparsesweep.family"] == "imp"
    note = labels.parent_note("python -m orchestrator.sweep --space imp_quick", plan)
    assert note.startswith("Started with:\n\n```\npython -m orchestrator.sweep --space imp_quick\n```")
    assert "variants: imp/bs16, imp/bs256, repel_all_2/bs16, repel_all_2/bs256" in note


def test_saved_view_of_the_runs_table() -> None:
    plan = make_plan(get_space("dense_quick"), search="grid", sets={}, grid_overrides={}, num_samples=1)
    labels = SweepLabels.from_plan(plan, "d q'1")
    tag, value = labels.shared_view("test_loss", "min")
    assert tag == "mlflow.sharedViewState.sweep-d_q_1" and labels.view_key() == "sweep-d_q_1"
    view = json.loads(value)
    assert view["selectedColumns"][:5] == ["tags.`sparsesweep.method`", "metrics.`test_acc`", "metrics.`density`",
                                           "metrics.`dying_ratio`", "params.`optim.lr`"]
    assert "metrics.`test_loss`" in view["selectedColumns"] and view["orderByKey"] == "metrics.`test_loss`"
    assert view["orderByAsc"] is True
    assert view["columnOrder"][:3] == ["attributes.`Run Name`", "tags.`sparsesweep.method`", "metrics.`test_acc`"]
    assert set(view["columnWidths"]) <= set(view["columnOrder"])
    assert view["searchFilter"] == "tags.`sparsesweep.sweep_name` = 'd q1' and tags.`sparsesweep.kind` = 'trial'"
    scatter, cycles = view["compareRunCharts"]
    assert (scatter["type"], scatter["xaxis"]["key"], scatter["yaxis"]["key"]) == ("SCATTER", "density", "test_acc")
    assert cycles["type"] == "LINE" and cycles["selectedMetricKeys"] == ["cycle/test_acc", "cycle/reinit_test_acc"]
    assert {c["metricSectionId"] for c in view["compareRunCharts"]} == {view["compareRunSections"][0]["uuid"]}
    # a local store: the route alone (relative), so the description's link works on any port
    assert view_url("sqlite:////x/mlflow.db", "3", "k") == \
        "#/experiments/3/runs?viewStateShareKey=k&workflowType=machine_learning"
    assert view_url("sqlite:////x/mlflow.db", "3", "k", base="http://127.0.0.1:5123") == \
        "http://127.0.0.1:5123/#/experiments/3/runs?viewStateShareKey=k&workflowType=machine_learning"
    assert view_url("http://head:5000/", "3", "k").startswith("http://head:5000/#/experiments/3/runs?")


def test_command_line_is_redacted() -> None:
    argv = ["--tracking-uri", "https://alice:s3cret@mlflow.example:5000",
            "--optuna-storage", "postgresql://bob:pa55@db/optuna?sslmode=require",
            "--set", "data.data_dir=/data/cifar x", "--name", "api_token=abc123"]
    cmd = redact_command(argv)
    assert "s3cret" not in cmd and "pa55" not in cmd and "abc123" not in cmd
    assert cmd.startswith("python -m orchestrator.sweep --tracking-uri 'https://alice:***@mlflow.example:5000'")
    assert "'data.data_dir=/data/cifar x'" in cmd  # quoted: a shell takes it back as it was
    assert redact("https://host:5000/x?password=hunter2&a=1") == "https://host:5000/x?password=***&a=1"


def test_params_text_and_no_position_metrics() -> None:
    assert [param_text(v) for v in (0.5, 1e-4, -0.0, True, None, 128, torch.tensor(0.25))] == [
        "0.5", "0.0001", "0.0", "True", "None", "128", "0.25"]
    metrics, step = extract_metrics({"epoch": 3, "step": 12, "cycle": 2, "test_acc": 0.9})
    assert metrics == {"cycle": 2.0, "test_acc": 0.9} and step == 3


def _write_trial(root: Path, cycles: int) -> tuple[Path, Path]:
    """A Tune trial directory with result.json and a checkpoint holding real mask files."""
    ckpt = root / "checkpoint_000001"
    gen = torch.Generator().manual_seed(0)
    masks = {f"layer{i}.weight": torch.rand(20, 10, generator=gen) > 0.1 * i for i in range(1, 6)}
    write_masks(ckpt / "masks.parquet", masks)
    for c in range(1, cycles + 1):
        write_masks(ckpt / "artifacts" / "masks" / f"cycle_{c:02d}.parquet",
                    {k: v & (torch.rand(v.shape, generator=gen) > 0.2 * (c - 1)) for k, v in masks.items()})
    (ckpt / "config.json").write_text("{}")
    rows = [{"epoch": e, "step": 5 * e, "cycle": e, "test_acc": 0.1 * e, "training_iteration": e,
             "checkpoint_dir_name": ckpt.name if e == cycles else None} for e in range(1, cycles + 1)]
    (root / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ckpt, root


def test_mask_figure_is_a_small_png(tmp_path: Path) -> None:
    ckpt, _ = _write_trial(tmp_path / "t", cycles=3)
    final, cycles = mask_files([(str(ckpt / "masks.parquet"), "masks"), (str(ckpt / "artifacts"), "")])
    assert final is not None and [c for c, _ in cycles] == [1, 2, 3]
    out = render_mask_figure(Path(final), [(c, Path(p)) for c, p in cycles], tmp_path / "d.png", "t")
    assert out is not None and out.read_bytes()[:8] == PNG and out.stat().st_size < 100_000
    other = tmp_path / "other.parquet"  # a Parquet file that is no mask file: no figure
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), other)
    assert render_mask_figure(other, [], tmp_path / "none.png") is None


def test_trial_draws_the_figure_into_its_final_checkpoint(tmp_path: Path) -> None:
    """The trial process draws `density.png` into its last checkpoint (listed in the manifest),
    so the driver uploads it with the masks instead of drawing it (trainables.tune)."""
    from trainables.tune import _with_mask_figure

    ckpt, _ = _write_trial(tmp_path / "t", cycles=2)
    write_manifest(ckpt, epoch=2, step=10)
    cfg = ExperimentConfig.from_flat({"schedule.epochs": 2})
    sent: list[tuple[float, bool]] = []
    report = _with_mask_figure(
        lambda m, d: sent.append((m["epoch"], d is not None and (d / MASK_FIGURE).is_file())),
        cfg, "ep/k=0.5/seed=0")
    report({"epoch": 1.0}, ckpt)  # an earlier epoch's checkpoint: no figure
    assert sent == [(1.0, False)] and not has_mask_figure(
        [(str(p), a) for p, a in checkpoint_files(ckpt, DEFAULT_ARTIFACT_FILES, "t")])
    report({"epoch": 2.0}, ckpt)
    assert sent[-1] == (2.0, True) and (ckpt / MASK_FIGURE).read_bytes()[:8] == PNG
    manifest = verify_checkpoint(ckpt)  # the figure is listed; the epoch and step kept
    assert MASK_FIGURE in manifest["files"] and (manifest["epoch"], manifest["step"]) == (2, 10)
    files = [(str(p), a) for p, a in checkpoint_files(ckpt, DEFAULT_ARTIFACT_FILES, "t")]
    assert (str(ckpt / MASK_FIGURE), "masks") in files and has_mask_figure(files)
    report({"epoch": 2.0}, None)  # a report without a checkpoint: nothing to draw into
    assert sent[-1] == (2.0, False)


@pytest.mark.integration
def test_sync_mlflow_writes_names_tags_inputs_and_figure(migrated_db: Path, tmp_path: Path) -> None:
    """`--sync-mlflow` rebuilds a trial's operations from Tune's files: the run gets the same
    name, tags, dataset input and mask figure as a live sweep, and a second sync changes nothing."""
    uri = fresh_store(migrated_db, tmp_path / "store")
    plan = make_plan(get_space("iep_quick"), search="grid", sets={"model.name": "mlp"},
                     grid_overrides={}, num_samples=1)
    labels = SweepLabels.from_plan(plan, "synced")
    tracker = SweepTracker(uri, "sync-ui", tmp_path / "store")
    parent = tracker.start("synced", {}, labels.parent_tags(), run_name=labels.parent_run_name(3))
    config = plan.points()[1]  # hard_lr
    _, trial_dir = _write_trial(tmp_path / "trial_ab12c_00001", cycles=2)
    trial = TuneTrial("ab12c_00001", "trial_ab12c_00001", "TERMINATED", config, trial_dir,
                      {"checkpoint_dir_name": "checkpoint_000001"}, 0)
    flat = plan.resolve(config).to_flat()
    writer = MlflowWriter(uri, tracker.experiment_id, parent)
    client = MlflowClient(tracking_uri=uri)
    for _ in range(2):  # the second pass finds everything there
        rid = writer.find_child_run(trial.trial_id)
        present = {a.path for a in client.list_artifacts(rid)} if rid else set()
        if "masks" in present:
            present |= {a.path for a in client.list_artifacts(rid, "masks")}
        for op in trial_ops(trial, flat, present, labels):
            writer.apply(json.loads(json.dumps(op)))  # as spooled
    (run,) = client.search_runs([tracker.experiment_id], "tags.`sparsesweep.kind` = 'trial'")
    assert run.info.run_name == "hard_iep/hard_lr/seed=0" and run.info.status == "FINISHED"
    assert run.data.tags["sparsesweep.method"] == "hard_iep"
    assert run.data.tags["mlflow.runColor"] == RUN_COLORS[1]
    assert [(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs] == [
        ("digits", dataset_input(flat)["digest"])]  # logged once
    assert not {"epoch", "step"} & set(run.data.metrics)
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "masks")}
    assert "masks/density.png" in paths
    png = Path(client.download_artifacts(run.info.run_id, "masks/density.png", str(tmp_path)))
    assert png.read_bytes()[:8] == PNG
