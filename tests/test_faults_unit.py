"""Fault handling without Ray: checkpoint integrity and fallback, divergence, replayed reports,
the MLflow spool and its retry policy, and the writer's idempotence on a real MLflow store.

The integration side (a real sweep killed, diverging, losing its server or its disk) is in
tests/test_faults.py; these pin down each mechanism on its own, in seconds.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_tools import run_collecting
from mlflow import MlflowClient

from conftest import fresh_store
from orchestrator.recovery import error_summary, probe_storage, storage_failure_message
from orchestrator.tracking.ops import (
    TrialRecord,
    end_op,
    result_ops,
    start_op,
    tags_op,
)
from orchestrator.tracking.spool import FILES_DIR, Outbox, Spool
from orchestrator.tracking.tracker import SweepTracker
from orchestrator.tracking.writer import MlflowWriter
from trainables.checkpoint_io import (
    MANIFEST_FILE,
    CorruptCheckpoint,
    usable_checkpoint,
    verify_checkpoint,
)
from trainables.config import ConfigError, ExperimentConfig
from trainables.keys import TIMING_KEYS
from trainables.loop import REPLAYED_KEY, run_experiment

TINY = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "32", "schedule.epochs": 4,
        "data.batch_size": 64, "run.max_steps_per_epoch": 3, "method.prune_rate": 0.5, "optim.lr": 0.2}


_run = run_collecting


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[Path]]:
    return _run(ExperimentConfig.from_flat(TINY), tmp_path_factory.mktemp("tiny"))


def _copy(ckpts: list[Path], tmp: Path) -> list[Path]:
    out = []
    for c in ckpts:
        shutil.copytree(c, tmp / c.name)
        out.append(tmp / c.name)
    return out


# ----- checkpoint integrity ------------------------------------------------------------------

def test_every_checkpoint_has_a_manifest_that_verifies(tiny_run: tuple[list[dict], list[Path]]) -> None:
    reports, ckpts = tiny_run
    assert len(ckpts) == 4
    for epoch, ckpt in enumerate(ckpts, start=1):
        body = verify_checkpoint(ckpt)
        assert body["epoch"] == epoch and set(body["files"]) >= {"state.pt", "config.json", "masks.parquet"}


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest", "missing_file"])
def test_damaged_checkpoint_is_refused_by_its_checksums(
        tiny_run: tuple[list[dict], list[Path]], tmp_path: Path, damage: str) -> None:
    ckpt = _copy(tiny_run[1][-1:], tmp_path)[0]
    if damage == "truncate":
        with open(ckpt / "state.pt", "r+b") as f:
            f.truncate(100)
        match = "state.pt has 100 bytes, the manifest says"
    elif damage == "flip":  # same size, one bit: only the checksum sees it
        data = bytearray((ckpt / "masks.parquet").read_bytes())
        data[len(data) // 2] ^= 1
        (ckpt / "masks.parquet").write_bytes(bytes(data))
        match = "checksum mismatch in masks.parquet"
    elif damage == "no_manifest":
        (ckpt / MANIFEST_FILE).unlink()
        match = "no manifest.json"
    else:
        (ckpt / "config.json").unlink()
        match = "config.json is missing"
    with pytest.raises(CorruptCheckpoint, match=match):
        verify_checkpoint(ckpt)
    with pytest.raises(CorruptCheckpoint, match=match):  # the engine refuses it too
        run_experiment(ExperimentConfig.from_flat(TINY), resume_from=ckpt)


def test_fallback_to_previous_checkpoint_says_so_and_resumes_bit_identically(
        tiny_run: tuple[list[dict], list[Path]], tmp_path: Path) -> None:
    reports, ckpts = tiny_run
    c1, c2, c3 = _copy(ckpts[:3], tmp_path)
    with open(c3 / "state.pt", "r+b") as f:  # the newest one is cut short
        f.truncate(os.path.getsize(c3 / "state.pt") - 1)
    said: list[str] = []
    assert usable_checkpoint(c3, warn=said.append) == c2
    assert len(said) == 2 and "checkpoint_000002: state.pt has" in said[0] and "truncated" in said[0]
    assert said[1].endswith(f"resuming from checkpoint {c2} instead")
    resumed, _ = _run(ExperimentConfig.from_flat(TINY), tmp_path / "r", resume_from=c2)
    trained = [r for r in resumed if not r.get(REPLAYED_KEY)]
    assert [r["epoch"] for r in trained] == [3, 4]
    for got, want in zip(trained, reports[2:], strict=True):
        assert got["train_loss"] == want["train_loss"] and got["test_acc"] == want["test_acc"]


def test_checkpoint_deleted_after_the_last_saved_state_resumes_from_the_newest(
        tiny_run: tuple[list[dict], list[Path]], tmp_path: Path) -> None:
    """What a SIGKILLed driver leaves: Tune recorded checkpoint 1, kept 2 and 3, deleted 1."""
    c1, c2, c3 = _copy(tiny_run[1][:3], tmp_path)
    shutil.rmtree(c1)
    said: list[str] = []
    assert usable_checkpoint(c1, warn=said.append) == c3
    assert "is gone" in said[0]
    for c in (c2, c3):
        (c / MANIFEST_FILE).unlink()
    assert usable_checkpoint(c1, warn=said.append) is None
    assert said[-1] == "sparsesweep: no intact checkpoint left; the trial restarts from the beginning"


def test_restore_replays_the_latest_reports_then_trains_on(
        tiny_run: tuple[list[dict], list[Path]], tmp_path: Path) -> None:
    reports, ckpts = tiny_run
    resumed, _ = _run(ExperimentConfig.from_flat(TINY), tmp_path, resume_from=ckpts[1], report_restored=True)
    assert [(r["epoch"], bool(r.get(REPLAYED_KEY))) for r in resumed] == [
        (1, True), (2, True), (3, False), (4, False)]
    for got, want in zip(resumed[:2], reports[:2], strict=True):  # a replay: the report, unchanged
        assert {k: v for k, v in got.items() if k != REPLAYED_KEY} == want
    for got, want in zip(resumed[2:], reports[2:], strict=True):  # then training, bit-identical
        assert {k: v for k, v in got.items() if k not in TIMING_KEYS} == \
            {k: v for k, v in want.items() if k not in TIMING_KEYS}
    # restored after its last epoch: the final report again, with a checkpoint, no training
    again, ckpts_again = _run(ExperimentConfig.from_flat(TINY), tmp_path / "end", resume_from=ckpts[-1])
    assert [r["epoch"] for r in again][-1] == 4 and len(ckpts_again) == 1
    assert all(r[REPLAYED_KEY] == 1.0 for r in again)


# ----- divergence ------------------------------------------------------------------------------

DIVERGING = {"method.name": "dense", "model.name": "mlp", "schedule.epochs": 4, "data.batch_size": 32,
             "run.max_steps_per_epoch": 8, "optim.lr": 50, "schedule.name": "constant"}


def test_diverging_run_stops_at_the_first_nonfinite_loss(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A large LR on a dense net without BatchNorm: the loss turns NaN/inf within an epoch."""
    import trainables.loop as loop

    cfg = ExperimentConfig.from_flat(DIVERGING)
    reports, ckpts = _run(cfg, tmp_path / "a")
    last = reports[-1]
    assert last["diverged"] == 1.0 and not math.isfinite(last["train_loss"])
    assert "test_acc" not in last  # no score: a searcher must not rank it
    assert [r["epoch"] for r in reports] == list(range(1, last["epoch"] + 1))
    assert len(ckpts) == len(reports) - 1  # no checkpoint of a diverged model
    # Without the check the same run goes on to the end: the step it names is the first
    # whose loss is not finite (steps before it trained on; per-epoch losses show the NaN).
    seen: list[tuple[int, float]] = []
    real = loop.check_finite

    def record(loss: torch.Tensor, state: Any, ctx: Any, device: Any) -> None:
        seen.append((state.step + 1, float(loss.detach())))

    monkeypatch.setattr(loop, "check_finite", record)
    unchecked, _ = _run(cfg, tmp_path / "b")
    assert unchecked[-1]["epoch"] == 4 and "diverged" not in unchecked[-1]
    first_bad = next(step for step, loss in seen if not math.isfinite(loss))
    assert last["step"] == first_bad
    monkeypatch.setattr(loop, "check_finite", real)


# ----- the spool ---------------------------------------------------------------------------

def test_spool_is_durable_ordered_and_compacts(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append({"op": "metrics", "i": i})
    assert [op["i"] for _, op in spool.pending()] == [0, 1, 2]
    assert [op["i"] for _, op in Spool(tmp_path).pending()] == [0, 1, 2]  # a new process sees them
    (end, _), *_ = spool.pending()
    spool.commit(end)
    assert [op["i"] for _, op in Spool(tmp_path).pending()] == [1, 2]  # the offset survives too
    for end, _ in list(spool.pending()):
        spool.commit(end)
    assert spool.pending_count() == 0 and spool.path.stat().st_size == 0  # emptied


def test_spool_drops_a_half_written_entry(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"op": "a"})
    with open(spool.path, "ab") as f:
        f.write(b'{"op": "b", "cut')  # a crash mid-append
    again = Spool(tmp_path)
    again.append({"op": "c"})
    assert [op["op"] for _, op in again.pending()] == ["a", "c"]


def test_spool_keeps_order_in_memory_when_the_disk_refuses(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    spool = Spool(tmp_path / "ok")
    spool.append({"op": "a"})
    spool.directory = blocker / "spool"  # cannot be created: every write fails from now on
    spool.append({"op": "b"})
    spool.append({"op": "c"})
    assert spool.unsaved_count() == 2
    spool.directory = tmp_path / "ok"  # the disk is back: the next append writes all, in order
    spool.append({"op": "d"})
    assert spool.unsaved_count() == 0
    assert [op["op"] for _, op in Spool(tmp_path / "ok").pending()] == ["a", "b", "c", "d"]


def test_spool_keeps_files_after_their_checkpoint_is_deleted(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint_000001"
    (ckpt / "artifacts" / "masks").mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    (ckpt / "artifacts" / "masks" / "cycle_01.parquet").write_bytes(b"mask")
    spool = Spool(tmp_path / "sweep")
    kept = spool.keep_files([(ckpt / "config.json", ""), (ckpt / "artifacts", "")])
    shutil.rmtree(ckpt)  # Tune deletes old checkpoints
    assert Path(kept[0][0]).read_text() == "{}"
    assert (Path(kept[1][0]) / "masks" / "cycle_01.parquet").read_bytes() == b"mask"
    assert str(tmp_path / "sweep" / FILES_DIR) in kept[0][0]


class Destination:
    """A stand-in for MLflow in the retry-policy test: down or up, and what it received."""

    def __init__(self) -> None:
        self.up = False
        self.received: list[dict] = []
        self.calls = 0

    def apply(self, op: dict) -> None:
        self.calls += 1
        if not self.up:
            raise ConnectionError("server down")
        if op.get("bad"):
            raise ValueError("refused for good")
        self.received.append(op)


def test_outbox_waits_while_down_then_replays_in_order(tmp_path: Path) -> None:
    dest = Destination()
    box = Outbox(Spool(tmp_path), dest.apply, probe=lambda: dest.up,
                 permanent=lambda e: isinstance(e, ValueError), first_backoff_s=0.0)
    box.submit({"n": 1})
    assert box.down and dest.calls == 1
    box.submit({"n": 2})
    box.submit({"n": 3, "bad": True})
    assert dest.calls == 1  # down: only the cheap probe runs, no call per entry
    dest.up = True
    box.submit({"n": 4})
    assert [op["n"] for op in dest.received] == [1, 2, 4] and box.skipped == 1
    assert not box.down and box.spool.pending_count() == 0
    strict = Outbox(Spool(None), dest.apply, probe=lambda: True, permanent=lambda e: False,
                    strict=True)
    dest.up = False
    with pytest.raises(ConnectionError):
        strict.submit({"n": 5})


# ----- the writer on a real MLflow store ------------------------------------------------------

def test_replayed_operations_log_each_step_once(migrated_db: Path, tmp_path: Path) -> None:
    uri = fresh_store(migrated_db, tmp_path)
    tracker = SweepTracker(uri, "replay", tmp_path)
    parent = tracker.start("replay", {}, {})
    rec = TrialRecord("t_00000", "trial_t_00000", [("optim.lr", "0.1")])
    ops = [start_op(rec),
           *result_ops(rec, {"epoch": 1, "cycle": 1, "test_acc": 0.5, "cycle/test_acc": 0.5}),
           *result_ops(rec, {"epoch": 2, "cycle": 1, "test_acc": 0.6}),
           *result_ops(rec, {"epoch": 3, "diverged": 1.0, "step": 9, "train_loss": float("nan")}),
           tags_op(rec, {"k": "v"}), end_op(rec, "FAILED")]
    writer = MlflowWriter(uri, tracker.experiment_id, parent)
    for op in ops:
        writer.apply(json.loads(json.dumps(op)))  # as read back from the spool
    for op in ops:  # the same entries again (a crash before the offset was saved)
        writer.apply(op)
    restored = MlflowWriter(uri, tracker.experiment_id, parent)  # a restarted driver
    for op in ops:
        restored.apply(op)
    rerun = result_ops(rec, {"epoch": 2, "test_acc": 0.99})  # an epoch re-run after a restore
    restored.apply(rerun[0])
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([tracker.experiment_id], "tags.`sparsesweep.kind` = 'trial'")
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_acc")] == [
        (1, 0.5), (2, 0.6)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "cycle/test_acc")] == [1]
    assert "diverged" not in run.data.metrics and "train_loss" not in run.data.metrics
    assert run.data.tags["sparsesweep.status"] == "diverged"
    assert run.data.tags["sparsesweep.diverged_at"] == "epoch 3, step 9"
    assert run.info.status == "FAILED" and run.data.params == {"optim.lr": "0.1"}


# ----- messages --------------------------------------------------------------------------------

def test_error_summary_names_the_exception() -> None:
    text = ("Failure # 1\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
            "ray.exceptions.RayTaskError(TrialOutOfMemory): ray::trial (pid=1)\n  File \"y\"\n"
            "trainables.tune.TrialOutOfMemory: out of memory in trial abc; lower data.batch_size\n")
    assert error_summary(text) == "trainables.tune.TrialOutOfMemory: out of memory in trial abc; lower data.batch_size"
    assert error_summary(RuntimeError("CUDA error: an illegal memory access")) == \
        "RuntimeError: CUDA error: an illegal memory access"
    assert error_summary(None) == ""


def test_storage_failure_message_and_probe(tmp_path: Path) -> None:
    err = OSError(28, "No space left on device", str(tmp_path / "x"))
    wrapped = RuntimeError("Tune could not save")
    wrapped.__cause__ = err
    msg = storage_failure_message(wrapped, str(tmp_path), "s1")
    assert msg == (f"the sweep's storage cannot be written (No space left on device: {tmp_path / 'x'}); "
                   f"finished trials and checkpoints are kept. Free space (or fix permissions), then "
                   f"resume with: python -m orchestrator.sweep --storage {tmp_path} --resume s1")
    assert storage_failure_message(ValueError("a bug"), str(tmp_path), "s1") is None  # writable
    assert probe_storage(str(tmp_path)) is None and not list(tmp_path.glob(".sparsesweep-probe-*"))


# ----- Tune's own state ------------------------------------------------------------------------

def _checkpoint_manager(trial_dir: Path, names: list[str]) -> Any:
    """Tune's checkpoint manager keeping `names`, as its experiment state holds it (Ray's own
    encoder: a cloudpickle inside the JSON)."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.tune.utils.serialization import TuneFunctionEncoder

    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
    manager._checkpoint_results = [_TrainingResult(Checkpoint(str(trial_dir / n)), {}) for n in names]
    manager._latest_checkpoint_result = manager._checkpoint_results[-1]
    return json.loads(json.dumps(manager, cls=TuneFunctionEncoder))


def _tune_state(sweep: Path, checkpoint: str = "checkpoint_000004") -> Path:
    """The JSON layout of Tune 2.60's experiment state, one trial (pickles as opaque bytes)."""
    trial_dir = sweep / "trial_ab_00000_0"
    (trial_dir / "checkpoint_000005").mkdir(parents=True)
    trial = json.dumps({"trial_id": "ab_00000", "status": "RUNNING", "relative_logdir": trial_dir.name})
    meta = json.dumps({"last_result": {"epoch": 5, "checkpoint_dir_name": checkpoint},
                       "checkpoint_manager": _checkpoint_manager(trial_dir, ["checkpoint_000003", checkpoint])})
    state = sweep / "experiment_state-2026-01-01_00-00-00.json"
    state.write_text(json.dumps({"trial_data": [[trial, meta]], "runner_data": {}}))
    (sweep / "tuner.pkl").write_bytes(pickle.dumps({"opaque": b"x" * 64}))
    (sweep / "callback-states-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps([{"a": 1}] * 8))
    # Tune's searcher state is a (cloud)pickle named .json
    (sweep / "basic-variant-state-2026-01-01_00-00-00.json").write_bytes(pickle.dumps({"n": 1}))
    return state


def test_resume_repairs_tunes_state_from_its_backup_and_lost_checkpoints(tmp_path: Path) -> None:
    from orchestrator.settings import TUNE_STATE_BACKUP
    from orchestrator.tuner.state import backup_state, prepare_restore, state_problem

    state = _tune_state(tmp_path)
    assert state_problem(tmp_path) is None and backup_state(tmp_path)
    good = state.read_text()
    state.write_text(good[: len(good) // 2])  # a full disk cut Tune's rewrite short
    assert "is unreadable" in state_problem(tmp_path)
    assert not backup_state(tmp_path)  # an unreadable state never replaces the backup
    notes = prepare_restore(tmp_path)
    assert state.read_text() == good and (tmp_path / (state.name + ".corrupt")).exists()
    assert "restored Tune's last readable state" in notes[0]
    # the checkpoint Tune recorded was deleted: an empty stand-in, which the trial skips
    placeholder = tmp_path / "trial_ab_00000_0" / "checkpoint_000004"
    assert placeholder.is_dir() and not any(placeholder.iterdir())
    assert "checkpoint_000004 was deleted" in notes[1]
    # so is the older one Tune keeps and deletes later (gone: a traceback in Tune's log)
    older = tmp_path / "trial_ab_00000_0" / "checkpoint_000003"
    assert older.is_dir() and not any(older.iterdir()) and len(notes) == 2
    assert prepare_restore(tmp_path) == []  # nothing left to repair

    # a storage sync cut a pickle Tune restores from: found without loading it, and replaced
    callbacks = tmp_path / "callback-states-2026-01-01_00-00-00.pkl"
    whole = callbacks.read_bytes()
    callbacks.write_bytes(whole[:-5])
    assert "callback-states-2026-01-01_00-00-00.pkl is unreadable" in state_problem(tmp_path)
    prepare_restore(tmp_path)
    assert callbacks.read_bytes() == whole and state_problem(tmp_path) is None
    shutil.rmtree(tmp_path / TUNE_STATE_BACKUP)
    state.write_text("{")
    with pytest.raises(ConfigError, match="no readable copy is kept"):
        prepare_restore(tmp_path)
