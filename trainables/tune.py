"""The Ray Tune trainable: the only module of `trainables/` that imports ray.

One trial = one ExperimentConfig. With one worker the engine runs in the trial's own
process (no Ray Train start-up cost, ~25 s per trial on 2 cores). With N workers the trial
builds a `TorchTrainer` (DDP: gloo on CPU, NCCL on GPU), as Ray 2.60 wants it: the trial
function calls `.fit()` and `TuneReportCallback` forwards rank 0's reports to Tune.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.tune

from trainables.config import ExperimentConfig, resolve_tune_config
from trainables.loop import DistContext, run_experiment


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


def _tune_reporter(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
    ckpt = ray.tune.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
    ray.tune.report(metrics, checkpoint=ckpt)


def _train_reporter(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
    ckpt = ray.train.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
    ray.train.report(metrics, checkpoint=ckpt)


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Body of each DDP worker; Ray Train has already set up the process group."""
    _quiet_ray_loggers()
    cfg = ExperimentConfig.from_flat(loop_config["flat"])
    ctx_ray = ray.train.get_context()
    ctx = DistContext(rank=ctx_ray.get_world_rank(), world_size=ctx_ray.get_world_size(),
                      local_rank=ctx_ray.get_local_rank())
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        run_experiment(cfg, reporter=_train_reporter, ctx=ctx)
        return
    with checkpoint.as_directory() as d:
        run_experiment(cfg, reporter=_train_reporter, ctx=ctx, resume_from=Path(d))


def trial(config: dict[str, Any], *, variants: Mapping[str, Mapping[str, Any]] | None = None,
          runtime: Runtime | None = None) -> None:
    """Ray Tune function trainable (wrap with `tune.with_parameters`)."""
    _quiet_ray_loggers()
    runtime = runtime or Runtime()
    cfg = resolve_tune_config(config, variants or {})
    if runtime.workers <= 1:
        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is None:
            run_experiment(cfg, reporter=_tune_reporter)
            return
        with checkpoint.as_directory() as d:
            run_experiment(cfg, reporter=_tune_reporter, resume_from=Path(d))
        return
    _fit_ddp(cfg, runtime)


def _fit_ddp(cfg: ExperimentConfig, runtime: Runtime) -> None:
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = ray.tune.get_context()
    storage = runtime.ddp_storage or str(Path(tempfile.gettempdir()) / "sparsesweep-ddp")
    resources = {"CPU": runtime.cpus_per_worker}
    if runtime.use_gpu:
        resources["GPU"] = runtime.gpus_per_worker or 1.0
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"flat": cfg.to_flat()},
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
