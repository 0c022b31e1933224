"""The one training engine. Methods plug in through hooks (`trainables.methods.base.Method`).

Where a run executes (in-process, a Ray Tune trial, a DDP worker) is the caller's business:
the engine reports through a `Reporter` callback and reads `torch.distributed` for DDP, so it
runs in a notebook as well as in a Ray Train worker.

Reproducibility: the model is built and initialised right after `torch.manual_seed(run.seed)`;
the data order and augmentation of epoch e are a pure function of (data seed, e); checkpoints
are taken at epoch boundaries and hold model, optimizer, schedule and method history, so a
run resumed from epoch e is bit-identical on CPU to one that never stopped.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from trainables.checkpoint_io import CorruptCheckpoint, verify_checkpoint, write_manifest
from trainables.config import ExperimentConfig
from trainables.data import (
    DataBundle,
    eval_batches,
    load_data,
    sample_batch,
    steps_per_epoch,
    train_batches,
)
from trainables.export.trial import finish_trial
from trainables.keys import CYCLE_STEP_KEY, DIVERGED_KEY, REPLAYED_KEY, cycle_key
from trainables.methods import build_method
from trainables.methods.base import Evaluator, Method, Position, StepContext
from trainables.models import build_model
from trainables.optim import build_optimizer, build_scheduler, lr_schedule, set_lr
from trainables.sparse.mask_io import masks_to_bytes, table_to_bytes, write_masks

# metrics, and a directory holding a checkpoint (rank 0 only, else None)
Reporter = Callable[[dict[str, float], "Path | None"], None]

STATE_FILE = "state.pt"
REPORTS_FILE = "reports.json"  # every report so far (up to REPORT_HISTORY), for replays
REPORT_HISTORY = 4096  # 40 cycles of 100 epochs; ~0.5 KB a report
REPLAY_REPORTS = 16  # a restored run sends its latest reports again: more than the lag of a
# one-worker trial's reports behind its driver (one: a Tune report waits for the driver)
CONFIG_FILE = "config.json"
MASKS_FILE = "masks.parquet"
ARTIFACTS_DIR = "artifacts"  # per-cycle files: masks/cycle_01.parquet, ranks/..., uploaded as they are


@dataclass(frozen=True)
class DistContext:
    """Rank layout of this process; world_size 1 means no DDP."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_torch(cls) -> DistContext:
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, ctx: DistContext) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("run.device=cuda but no CUDA device is visible to this process")
        return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def set_determinism(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels: exact reruns on CPU; on CUDA as far as cuBLAS/cuDNN allow."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not enabled
        torch.backends.cudnn.deterministic = enabled
    # torch.use_deterministic_algorithms(enabled, warn_only=True), less its import of
    # torch._inductor (about 2 s in every trial process) to set inductor's own flag: the engine
    # never compiles. tests/test_loop.py checks that torch reports the mode set.
    torch._C._set_deterministic_algorithms(enabled, warn_only=True)


# ----- the engine --------------------------------------------------------------------------

@dataclass
class TrainState:
    """Everything that changes while training, in one place for checkpoints."""

    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    epoch: int = 0  # epochs completed, over all cycles
    step: int = 0  # optimizer steps completed, over all cycles
    cycle: int = 1  # the cycle being trained (1-based); a boundary moves it on
    # Files written at cycle ends (relative path -> bytes), kept in every later checkpoint,
    # so the last checkpoint holds every cycle's masks and tables.
    artifacts: dict[str, bytes] = field(default_factory=dict)


def build_state(cfg: ExperimentConfig, device: torch.device, spe: int) -> TrainState:
    torch.manual_seed(cfg.run.seed)
    method = build_method(cfg)
    model = build_model(cfg, method.layer_factory())
    method.init_model(model)
    model.to(device)
    optimizer = build_optimizer(cfg, method.trainable_parameters(model))
    scheduler = build_scheduler(cfg, optimizer, spe)
    return TrainState(model=model, method=method, optimizer=optimizer, scheduler=scheduler)


def save_checkpoint(state: TrainState, cfg: ExperimentConfig, directory: Path,
                    reports: list[dict[str, float]] | None = None) -> None:
    """Write the checkpoint files, then their checksum manifest (last: no manifest = incomplete).

    `reports`: the reports so far, this epoch's last, kept (as JSON) so a restore can send
    them again.
    """
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "method": state.method.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "cycle": state.cycle,
        "torch_rng": torch.get_rng_state(),
        "config_hash": cfg.hash(),
    }, directory / STATE_FILE)
    (directory / CONFIG_FILE).write_text(cfg.to_json())
    history = [{k: v if isinstance(v, int) else float(v) for k, v in r.items()}
               for r in (reports or [])[-REPORT_HISTORY:]]
    (directory / REPORTS_FILE).write_text(json.dumps(history))
    masks = state.method.masks(state.model)
    if masks:
        write_masks(directory / MASKS_FILE, masks)
    for rel, blob in state.artifacts.items():
        target = directory / ARTIFACTS_DIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    write_manifest(directory, epoch=state.epoch, step=state.step)


def load_checkpoint(state: TrainState, cfg: ExperimentConfig, directory: Path,
                    device: torch.device) -> list[dict[str, float]]:
    """Restore `state` from a checkpoint; return the latest reports saved with it.

    The manifest is verified first (`CorruptCheckpoint` if a file is cut short or altered),
    and only tensors and plain containers are unpickled (`weights_only=True`): a checkpoint
    from shared storage can never run code.
    """
    directory = Path(directory)
    verify_checkpoint(directory)
    try:
        blob = torch.load(directory / STATE_FILE, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CorruptCheckpoint(f"checkpoint {directory}: {STATE_FILE} holds more than tensors and "
                                f"plain containers; refused to unpickle it ({str(e).splitlines()[0]})") from None
    if blob["config_hash"] != cfg.hash():
        raise ValueError(f"checkpoint in {directory} belongs to config {blob['config_hash']}, "
                         f"not {cfg.hash()}")
    state.model.load_state_dict(blob["model"])
    state.optimizer.load_state_dict(blob["optimizer"])
    state.scheduler.load_state_dict(blob["scheduler"])
    state.method.load_state_dict(blob["method"])
    state.epoch, state.step = blob["epoch"], blob["step"]
    state.cycle = blob.get("cycle", 1)
    torch.set_rng_state(blob["torch_rng"].cpu())
    root = directory / ARTIFACTS_DIR
    state.artifacts = {p.relative_to(root).as_posix(): p.read_bytes()
                       for p in sorted(root.rglob("*")) if p.is_file()}
    return read_reports(directory)


def read_reports(directory: Path) -> list[dict[str, float]]:
    """The reports a checkpoint keeps (oldest first); none for a checkpoint without them."""
    path = Path(directory) / REPORTS_FILE
    return list(json.loads(path.read_text())) if path.is_file() else []


def epoch_steps(cfg: ExperimentConfig, data: DataBundle) -> int:
    """Optimizer steps per epoch (drop_last), capped by run.max_steps_per_epoch."""
    spe = steps_per_epoch(data.n_train, cfg.data.batch_size)
    cap = cfg.run.max_steps_per_epoch
    return min(spe, cap) if cap else spe


def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running stats).

    DDP broadcasts buffers at the start of each training forward, but that forward then
    updates each rank's statistics with its own shard: after the last step the ranks differ.
    Evaluation and checkpoints must see one model.
    """
    if ctx.world_size > 1:
        for buffer in model.buffers():
            if buffer.dtype != torch.bool:  # bool buffers are masks, equal on every rank by design
                dist.broadcast(buffer, src=0)


def _reduce(values: list[float | torch.Tensor], ctx: DistContext, device: torch.device) -> list[float]:
    """Sum across ranks with one collective (one host sync)."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    if ctx.world_size > 1:
        dist.all_reduce(t)
    return t.tolist()


def evaluate(model: nn.Module, data: DataBundle, cfg: ExperimentConfig, ctx: DistContext,
             device: torch.device) -> dict[str, float]:
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.run.amp):
        for x, y in eval_batches(data, batch_size=cfg.data.eval_batch_size, rank=ctx.rank,
                                 world_size=ctx.world_size, device=device):
            out = model(x).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            count += len(y)
    loss, acc, n = _reduce([loss_sum, correct, count], ctx, device)
    return {"test_loss": loss / n, "test_acc": acc / n}


class Diverged(ArithmeticError):
    """The training loss became NaN or infinite: no later step can recover, so the run stops."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(f"training loss is {loss} at epoch {epoch}, step {step}: the run diverged")
        self.epoch, self.step, self.loss = epoch, step, loss


# Steps between two divergence checks: every step on CPU (free); on CUDA each check is a host
# sync, so it runs every few steps (a diverged run wastes at most that many steps).
DIVERGENCE_CHECK_STEPS = {"cpu": 1, "cuda": 16}


def check_finite(loss: torch.Tensor, state: TrainState, ctx: DistContext, device: torch.device) -> None:
    """Raise `Diverged` on every rank when the loss of any rank is not finite.

    All DDP ranks must stop at the same step (a rank that went on would wait forever in the
    next all-reduce), so the flag is summed over ranks first.
    """
    every = DIVERGENCE_CHECK_STEPS.get(device.type, 1)
    if (state.step + 1) % every:
        return
    bad = (~torch.isfinite(loss.detach())).to(torch.float64)
    if ctx.world_size > 1:
        dist.all_reduce(bad)
    if bool(bad):
        raise Diverged(epoch=state.epoch + 1, step=state.step + 1, loss=float(loss.detach()))


def train_epoch(state: TrainState, data: DataBundle, cfg: ExperimentConfig, ctx: DistContext,
                device: torch.device, model: nn.Module) -> dict[str, float]:
    """One epoch; `model` may be the DDP wrapper of `state.model`. Raises `Diverged`."""
    model.train()
    module, method = state.model, state.method
    spe = epoch_steps(cfg, data)
    data_seed, data_epoch = method.data_order(state.cycle, state.epoch, run_data_seed(cfg))
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    batches = train_batches(data, batch_size=cfg.data.batch_size, epoch=data_epoch, seed=data_seed,
                            rank=ctx.rank, world_size=ctx.world_size, augment=cfg.data.augment,
                            dataset=cfg.data.dataset, device=device)
    _sample = functools.partial(sample_batch, data, seed=data_seed, rank=ctx.rank,
                                world_size=ctx.world_size, augment=cfg.data.augment,
                                dataset=cfg.data.dataset, device=device)
    for i, (x, y) in enumerate(batches):
        if i >= spe:
            break
        step_ctx = StepContext(step=state.step, epoch=state.epoch, cycle=state.cycle,
                               steps_per_epoch=spe, optimizer=state.optimizer, x=x, y=y,
                               sample_batch=functools.partial(_sample, key=state.step))
        method.before_step(module, step_ctx)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.run.amp):
            out = model(x)
            loss = F.cross_entropy(out.float(), y)
            extra = method.loss_term(module, step_ctx)
        total = loss if extra is None else loss + extra.float()
        check_finite(total, state, ctx, device)
        state.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if not method.before_optimizer_step(module, step_ctx):
            state.optimizer.step()
        state.scheduler.step()
        method.after_step(module, step_ctx)
        state.step += 1
        loss_sum += loss.detach() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
        count += len(y)
    state.epoch += 1
    loss, acc, n = _reduce([loss_sum, correct, count], ctx, device)
    return {"train_loss": loss / max(n, 1), "train_acc": acc / max(n, 1)}


def run_data_seed(cfg: ExperimentConfig) -> int:
    """The run's data seed: run.data_seed, or run.seed when it is unset."""
    return cfg.run.seed if cfg.run.data_seed is None else cfg.run.data_seed


@torch.no_grad()
def recompute_bn(model: nn.Module, data: DataBundle, cfg: ExperimentConfig, ctx: DistContext,
                 device: torch.device, batches: int = 0) -> None:
    """Re-estimate every BatchNorm's running statistics from training batches (epoch 0's order).

    Cumulative averages (momentum None) over `batches` batches (0: one epoch), without
    augmentation; interpolated weights need their own statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        model.eval()
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    limit = batches or epoch_steps(cfg, data)
    for i, (x, _) in enumerate(train_batches(data, batch_size=cfg.data.batch_size, epoch=0,
                                             seed=run_data_seed(cfg), rank=ctx.rank,
                                             world_size=ctx.world_size, augment=False,
                                             dataset=cfg.data.dataset, device=device)):
        if i >= limit:
            break
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.run.amp):
            model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    sync_buffers(model, ctx)
    model.eval()


def make_evaluator(data: DataBundle, cfg: ExperimentConfig, ctx: DistContext,
                   device: torch.device) -> Evaluator:
    """The engine's evaluation and BatchNorm re-estimation, lent to a method."""
    return Evaluator(evaluate=lambda model: evaluate(model, data, cfg, ctx, device),
                     recompute_bn=lambda model, batches=0: recompute_bn(model, data, cfg, ctx, device, batches))


def start_cycle(state: TrainState, cycle: int) -> None:
    """The boundary into `cycle`: the method acts, then the engine applies its CycleStart."""
    start = state.method.begin_cycle(state.model, cycle)
    if start.reset_optimizer:
        state.optimizer.state.clear()
    lr_schedule(state.scheduler).restart(state.step, lr=start.lr, offset=start.lr_offset_steps)
    set_lr(state.scheduler, state.step)
    state.cycle = cycle


# Engine metrics repeated at step = cycle when a cycle ends (`cycle/test_acc`, ...).
CYCLE_ENGINE_METRICS = ("test_acc", "test_loss", "train_acc", "train_loss")


def end_cycle(state: TrainState, metrics: dict[str, float]) -> dict[str, float]:
    """Cycle-end metrics (`cycle/<name>`, at step `cycle_step`: the cycle or round the method
    counts) and artifacts (kept in `state.artifacts`, named by that number)."""
    engine = {k: metrics[k] for k in CYCLE_ENGINE_METRICS if k in metrics}
    state.method.observe_cycle_metrics(state.cycle, dict(engine))
    out = state.method.end_of_cycle(state.model, state.cycle)
    number = state.method.cycle_step(state.cycle)
    prefix = state.method.cycle_metric_prefix(state.cycle)
    if out.masks:
        state.artifacts[f"masks/cycle_{number:02d}.parquet"] = masks_to_bytes(out.masks)
    for name, table in out.tables.items():
        state.artifacts[f"{name}/{prefix}cycle_{number:02d}.parquet"] = table_to_bytes(table)
    cycle_metrics: dict[str, float] = {cycle_key(f"{prefix}{k}"): v for k, v in engine.items()}
    cycle_metrics.update({cycle_key(k): float(v) for k, v in out.metrics.items()})
    cycle_metrics[CYCLE_STEP_KEY] = number
    return cycle_metrics


def phase_named(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """The engine's per-epoch metrics of a side phase (IMP's reinit baseline, its second copy)
    under the phase's own names, so `test_acc` stays one training's curve."""
    if not prefix:
        return metrics
    return {(f"{prefix}{k}" if k in CYCLE_ENGINE_METRICS else k): v for k, v in metrics.items()}


def run_experiment(cfg: ExperimentConfig, *, reporter: Reporter | None = None,
                   resume_from: Path | None = None, ctx: DistContext | None = None,
                   data: DataBundle | None = None, progress: bool = False,
                   report_restored: bool = False) -> dict[str, float]:
    """Train `cfg` to the end, reporting after every epoch; returns the last metrics.

    Every epoch reports its metrics with `epoch` (global, over all cycles) and `cycle`; the
    last epoch of a cycle also reports the cycle's metrics (`cycle/*`) and is always
    evaluated and checkpointed.

    A loss that becomes NaN or infinite ends the run at once: one last report holds
    `diverged=1.0`, the epoch and step it happened at, and no test metric (a diverged run has
    no score to rank), and no checkpoint.

    Restores: a report can be lost between a trial and the driver that records it (a killed
    driver, a DDP worker group that fails while its reports are forwarded). So a run restored
    from its final checkpoint, or with `report_restored`, first sends again the latest
    reports the checkpoint holds (marked `replayed`); whoever already has a step keeps it.
    """
    ctx = ctx or DistContext.from_torch()
    device = resolve_device(cfg.run.device, ctx)
    set_determinism(cfg.run.deterministic, device)
    data = data or load_data(cfg.data, progress=progress and ctx.is_main, verify=cfg.data.verify)
    data = data.to(device)  # on a GPU: the whole (uint8) dataset once, no host copy per batch
    if cfg.data.batch_size % ctx.world_size:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} is not divisible by "
                         f"{ctx.world_size} workers")
    spe = epoch_steps(cfg, data)
    state = build_state(cfg, device, spe)
    plan = state.method.cycle_plan()
    history: list[dict[str, float]] = []
    state.method.bind_evaluator(make_evaluator(data, cfg, ctx, device))
    if resume_from is not None:
        history = load_checkpoint(state, cfg, Path(resume_from), device)
    model: nn.Module = state.model
    if ctx.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(state.model, device_ids=ids)
    state.method.on_train_start(state.model, Position(step=state.step, epoch=state.epoch,
                                                      cycle=state.cycle, steps_per_epoch=spe))

    def send(metrics: dict[str, float], checkpoint_now: bool) -> None:
        if reporter is None:
            return
        if checkpoint_now and ctx.is_main:
            with tempfile.TemporaryDirectory(prefix="sparsesweep-ckpt-") as tmp:
                save_checkpoint(state, cfg, Path(tmp), history)
                reporter(metrics, Path(tmp))
        else:
            reporter(metrics, None)

    def report(metrics: dict[str, float], checkpoint_now: bool) -> None:
        history.append(metrics)
        del history[:-REPORT_HISTORY]
        send(metrics, checkpoint_now)

    metrics: dict[str, float] = {}
    finished = state.epoch >= plan.total_epochs
    if history and (report_restored or finished):
        replay = [{**r, REPLAYED_KEY: 1.0} for r in history[-(REPLAY_REPORTS if report_restored else 1):]]
        for i, old in enumerate(replay):  # the last one with a checkpoint if the run is over
            send(old, finished and i == len(replay) - 1)
        if finished:
            return history[-1]
    while state.epoch < plan.total_epochs:
        cycle = plan.cycle_of(state.epoch)
        if cycle > state.cycle:
            start_cycle(state, cycle)
        t0 = time.perf_counter()
        try:
            metrics = train_epoch(state, data, cfg, ctx, device, model)
        except Diverged as e:
            metrics = {DIVERGED_KEY: 1.0, "train_loss": e.loss, "epoch": e.epoch, "step": e.step,
                       "cycle": state.cycle}
            report(metrics, False)
            return metrics
        elapsed = time.perf_counter() - t0
        cycle_done = plan.ends_cycle(state.epoch)
        sync_buffers(state.model, ctx)
        if cycle_done or state.epoch % cfg.run.eval_every == 0:
            metrics.update(evaluate(state.model, data, cfg, ctx, device))
        metrics.update(state.method.end_of_epoch(state.model, state.epoch))
        metrics.update(epoch=state.epoch, step=state.step, cycle=state.cycle, epoch_time_s=elapsed,
                       lr=state.optimizer.param_groups[0]["lr"])
        if cycle_done:
            metrics.update(end_cycle(state, metrics))
        metrics = phase_named(metrics, state.method.cycle_metric_prefix(state.cycle))
        if state.epoch >= plan.total_epochs and cfg.method.masked and ctx.is_main:
            # the sparse network for inference (artifacts export/...) and its measured speed-up
            metrics.update(finish_trial(state.model, cfg, data, state.artifacts))
        every = cfg.run.masks_every
        if every and state.epoch % every == 0 and (masks := state.method.masks(state.model)):
            state.artifacts[f"masks/epoch_{state.epoch:04d}.parquet"] = masks_to_bytes(masks)
        report(metrics, cycle_done or state.epoch % cfg.run.checkpoint_every == 0)
    return metrics
