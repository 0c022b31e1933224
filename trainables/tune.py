"""The Ray Tune trainable: the only module of `trainables/` that imports ray.

One trial = one ExperimentConfig. With one worker the engine runs in the trial's own
process (no Ray Train start-up cost, ~25 s per trial on 2 cores). With N workers the trial
builds a `TorchTrainer` (DDP: gloo on CPU, NCCL on GPU), as Ray 2.60 wants it: the trial
function calls `.fit()` and `TuneReportCallback` forwards rank 0's reports to Tune.

Faults handled here, because only the trial process sees them:
- a restored trial resumes from its newest intact checkpoint: a corrupt or truncated one
  (checksum manifest) is skipped, and the trial's log says so
  (`trainables.checkpoint_io.usable_checkpoint`); its latest reports are sent again first;
- a loss that becomes NaN/inf ends the trial normally with `diverged=1` in its last report
  (no test metric: Optuna records the trial as pruned, not as a number);
- an allocation failure (CPU or CUDA) and a full or unwritable storage fail the trial with a
  one-line reason that says what to change; the other trials go on.

The trial also draws its mask figure (`trainables.mask_figure`) into its final checkpoint
(`density.png`, listed in the checkpoint's manifest), titled with its MLflow run name: the
sweep's driver then only uploads it to ``masks/density.png`` instead of drawing every trial's
figure itself, one after another, while Tune waits (benchmarks/orchestration_overhead.py).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.tune
import torch

from trainables.checkpoint_io import (
    MANIFEST_FILE,
    STORAGE_ERRNOS,
    usable_checkpoint,
    write_manifest,
)
from trainables.config import ExperimentConfig, resolve_tune_config
from trainables.keys import DIVERGED_KEY, REPLAYED_KEY
from trainables.loop import (
    ARTIFACTS_DIR,
    MASKS_FILE,
    DistContext,
    Reporter,
    read_reports,
    run_experiment,
)
from trainables.mask_figure import MASK_FIGURE, render_mask_figure
from trainables.plugins import load_plugins, modules_from_env

logger = logging.getLogger(__name__)

#: (Tune config, its flat ExperimentConfig, trial id) -> the title of the trial's mask figure
#: (the driver passes its MLflow run name: `orchestrator.tracking.labels.SweepLabels.run_name`).
FigureTitle = Callable[[Mapping[str, Any], Mapping[str, Any], str], str]

# Leading keys of every report: Tune's live table shows the first four metrics it sees, so a
# diverged trial is visible there (diverged = 1) next to its loss and accuracy.
TABLE_KEYS = ("train_loss", "test_acc", "test_loss")


class TrialOutOfMemory(MemoryError):
    """An allocation failed in this trial (CPU or CUDA); the message says what to lower."""


class StorageFull(OSError):
    """The trial could not write its checkpoint (disk full, quota, read-only, permissions)."""


def _quiet_ray_loggers() -> None:
    """Ray logs every persisted checkpoint at INFO, once per epoch per trial: drown-out noise."""
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class Runtime:
    """Where and how a trial runs: never part of the experiment's identity."""

    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    ddp_storage: str = ""  # storage for the inner Ray Train runs (N workers only)


def for_tune(metrics: Mapping[str, float]) -> dict[str, float]:
    """The report as Tune gets it: the live table's columns first, `diverged` always present."""
    out = {k: metrics[k] for k in TABLE_KEYS if k in metrics}
    out[DIVERGED_KEY] = float(metrics.get(DIVERGED_KEY, 0.0))
    out.update((k, v) for k, v in metrics.items() if k not in out)
    return out


def _tune_reporter(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
    with _storage_errors():
        ckpt = ray.tune.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
        ray.tune.report(for_tune(metrics), checkpoint=ckpt)


def _train_reporter(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
    with _storage_errors():
        ckpt = ray.train.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
        ray.train.report(for_tune(metrics), checkpoint=ckpt)


def add_mask_figure(ckpt_dir: Path, title: str) -> Path | None:
    """Draw the mask figure of the checkpoint's masks (final and per cycle) into it as
    `density.png`, and list it in the checkpoint's manifest; None when it holds no mask.

    A figure is not worth a failed trial: on any error it is left out (the driver draws it
    from the uploaded masks instead) and the trial's log says why."""
    final = ckpt_dir / MASKS_FILE
    cycles = [(int(f.stem.removeprefix("cycle_")), f)
              for f in sorted((ckpt_dir / ARTIFACTS_DIR / "masks").glob("cycle_*.parquet"))
              if f.stem.removeprefix("cycle_").isdigit()]
    out = ckpt_dir / MASK_FIGURE
    try:
        drawn = render_mask_figure(final if final.is_file() else None, cycles, out, title=title)
        if drawn is not None:
            body = json.loads((ckpt_dir / MANIFEST_FILE).read_text())
            write_manifest(ckpt_dir, **{k: v for k, v in body.items() if k not in ("version", "files")})
        return drawn
    except Exception:
        logger.warning("mask figure of %s not drawn; the driver draws it", ckpt_dir, exc_info=True)
        out.unlink(missing_ok=True)
        return None


def _with_mask_figure(reporter: Reporter, cfg: ExperimentConfig, title: str) -> Reporter:
    """`reporter`, drawing the mask figure into the last epoch's checkpoint before it is sent."""

    def send(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
        if ckpt_dir is not None and metrics.get("epoch", 0) >= cfg.total_epochs:
            add_mask_figure(Path(ckpt_dir), title)
        reporter(metrics, ckpt_dir)

    return send


def _figure_title(figure_title: FigureTitle | None, config: Mapping[str, Any],
                  cfg: ExperimentConfig) -> str:
    """The trial's MLflow run name (Tune's trial name without one, or if it fails)."""
    ctx = ray.tune.get_context()
    if figure_title is not None:
        try:
            return figure_title(config, cfg.to_flat(), ctx.get_trial_id()) or ctx.get_trial_name()
        except Exception:  # a title is not worth a failed trial
            logger.warning("no mask figure title for trial %s", ctx.get_trial_name(), exc_info=True)
    return ctx.get_trial_name()


def _oserror_in(exc: BaseException) -> OSError | None:
    """The first OSError in an exception's cause/context chain (pyarrow wraps them)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


@contextmanager
def _storage_errors() -> Iterator[None]:
    """A report whose checkpoint cannot be written fails the trial with one clear line."""
    try:
        yield
    except Exception as e:
        os_error = _oserror_in(e)
        if os_error is None:
            raise
        where = os_error.filename or "the sweep's storage"
        raise StorageFull(os_error.errno, f"cannot write the checkpoint to {where}: "
                          f"{os_error.strerror}; free space (or fix permissions), then resume "
                          f"the sweep with --resume") from e


def is_out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: torch's OutOfMemoryError (CUDA), CPU allocator or MemoryError."""
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


@contextmanager
def _out_of_memory_hint(cfg: ExperimentConfig) -> Iterator[None]:
    """Re-raise an allocation failure as TrialOutOfMemory, naming the knobs that size memory."""
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrialOutOfMemory(
            f"out of memory in trial {cfg.hash()} ({type(e).__name__}: {first}); lower "
            f"data.batch_size (now {cfg.data.batch_size}) or the model size (model.name="
            f"{cfg.model.name}, model.width={cfg.model.width:g}), or give each worker more memory "
            f"(--gpus-per-worker / a larger GPU)") from e


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _resume(cfg: ExperimentConfig, checkpoint_dir: str, *, replay: bool, **kw: Any) -> None:
    """Resume from the trial's newest intact checkpoint (Tune's latest, unless it is damaged,
    deleted or older than one on disk); with `replay`, first send its latest reports again.

    Why replay: a report can be lost on its way to the driver's records (a killed driver, a
    full disk under the MLflow spool). The tracker keeps the first value of a step, so
    repeats cost nothing.
    """
    chosen = usable_checkpoint(Path(checkpoint_dir), warn=_warn)
    run_experiment(cfg, resume_from=chosen, report_restored=replay, **kw)


def _replay_ddp_reports(run_dir: Path) -> None:
    """Send Tune every report the newest intact checkpoint of a DDP trial's Train run holds.

    Ray Train forwards rank 0's reports to Tune on its own schedule, so when a worker dies
    Tune can miss many of them (tens, with short epochs). The trial replays them here, straight
    to Tune, before Train restarts its workers from that checkpoint.
    """
    if not run_dir.is_dir():  # a first start, or remote storage (Train's own restore only)
        return
    found = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    chosen = usable_checkpoint(found[-1], warn=_warn) if found else None
    for old in read_reports(chosen) if chosen is not None else []:
        ray.tune.report(for_tune({**old, REPLAYED_KEY: 1.0}))


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Body of each DDP worker; Ray Train has already set up the process group."""
    _quiet_ray_loggers()
    load_plugins(modules_from_env())  # a plugin's criterion, method, model or dataset
    cfg = ExperimentConfig.from_flat(loop_config["flat"])
    ctx_ray = ray.train.get_context()
    ctx = DistContext(rank=ctx_ray.get_world_rank(), world_size=ctx_ray.get_world_size(),
                      local_rank=ctx_ray.get_local_rank())
    checkpoint = ray.train.get_checkpoint()
    reporter = _with_mask_figure(_train_reporter, cfg, loop_config.get("figure_title", ""))
    with _out_of_memory_hint(cfg):
        if checkpoint is None:
            run_experiment(cfg, reporter=reporter, ctx=ctx)
            return
        with checkpoint.as_directory() as d:
            _resume(cfg, d, replay=False, reporter=reporter, ctx=ctx)  # the trial replayed


def trial(config: dict[str, Any], *, variants: Mapping[str, Mapping[str, Any]] | None = None,
          runtime: Runtime | None = None, figure_title: FigureTitle | None = None) -> None:
    """Ray Tune function trainable (wrap with `tune.with_parameters`); `figure_title` names the
    mask figure of the final checkpoint (the trial's name without it)."""
    _quiet_ray_loggers()
    load_plugins(modules_from_env())  # installed plugins and the driver's --plugin modules
    runtime = runtime or Runtime()
    cfg = resolve_tune_config(config, variants or {})
    title = _figure_title(figure_title, config, cfg)
    if runtime.workers <= 1:
        checkpoint = ray.tune.get_checkpoint()
        reporter = _with_mask_figure(_tune_reporter, cfg, title)
        with _out_of_memory_hint(cfg):
            if checkpoint is None:
                run_experiment(cfg, reporter=reporter)
                return
            with checkpoint.as_directory() as d:
                _resume(cfg, d, replay=True, reporter=reporter)
        return
    _fit_ddp(cfg, runtime, title)


def _fit_ddp(cfg: ExperimentConfig, runtime: Runtime, title: str = "") -> None:
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = ray.tune.get_context()
    storage = runtime.ddp_storage or str(Path(tempfile.gettempdir()) / "sparsesweep-ddp")
    if "://" not in storage:
        _replay_ddp_reports(Path(storage) / ctx.get_trial_id())
    resources = {"CPU": runtime.cpus_per_worker}
    if runtime.use_gpu:
        resources["GPU"] = runtime.gpus_per_worker or 1.0
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"flat": cfg.to_flat(), "figure_title": title},
        torch_config=TorchConfig(backend="nccl" if runtime.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=runtime.workers, use_gpu=runtime.use_gpu,
                                               resources_per_worker=resources),
        # A fixed name per trial: a resumed trial finds its Train run's checkpoints again.
        run_config=ray.train.RunConfig(name=ctx.get_trial_id(), storage_path=storage,
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       callbacks=[TuneReportCallback()]),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
