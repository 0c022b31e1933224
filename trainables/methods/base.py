"""The hooks through which a method plugs into the one training engine (`trainables.loop`).

A method never owns a loop. The engine builds the model with the method's layer factory,
lets the method initialise it, optimises `method.trainable_parameters(model)`, and calls
the hooks below at fixed points. `model` is always the unwrapped module (never the DDP
wrapper), and hooks must not force a device sync except in `end_of_epoch`/`end_of_cycle`.

Cycles. Iterative methods (iterative edge-popup, IMP rounds, LR rewinding) train in cycles
of `schedule.epochs` epochs with something happening at each boundary. A method declares
its cycles (`cycle_plan`); at each boundary the engine calls `begin_cycle` exactly once
(never again when a checkpoint taken later in that cycle is restored), the method prunes,
rewinds or reinitialises its own tensors, and answers with a `CycleStart` telling the engine
what to do with the LR schedule and the optimizer state. At each cycle's end the engine
collects `end_of_cycle`: metrics logged at step = cycle, and masks / tables kept as
artifacts (`masks/cycle_XX.parquet`, ...). Single-cycle methods get the same calls once.

Methods that measure models beyond the engine's own evaluation (IMP's linear mode
connectivity) get an `Evaluator` once, before training (`bind_evaluator`). A method whose
cycles play different parts (IMP: the second copy, the reinit baseline, the IMP training)
names the engine's per-cycle metrics with `cycle_metric_prefix`, sees them through
`observe_cycle_metrics` before `end_of_cycle`, and may train a cycle on another data order
(`data_order`).

Per step, in order: `before_step` -> forward -> loss + `loss_term` -> backward ->
`before_optimizer_step` (gradients are ready) -> optimizer step (unless skipped) ->
LR schedule step -> `after_step`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pyarrow as pa
import torch
from torch import Tensor, nn

from trainables.config import ExperimentConfig, MethodConfig
from trainables.models.layers import LayerFactory


@dataclass(frozen=True)
class CyclePlan:
    """How a method trains: `count` cycles of `epochs` epochs each (1 cycle: plain training)."""

    count: int
    epochs: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.epochs < 1:
            raise ValueError(f"a cycle plan needs count >= 1 and epochs >= 1, got {self}")

    @property
    def total_epochs(self) -> int:
        return self.count * self.epochs

    def cycle_of(self, epochs_done: int) -> int:
        """1-based cycle that the epoch after `epochs_done` completed epochs belongs to."""
        return epochs_done // self.epochs + 1

    def ends_cycle(self, epochs_done: int) -> bool:
        """True when `epochs_done` completed epochs close a cycle."""
        return epochs_done > 0 and epochs_done % self.epochs == 0


@dataclass(frozen=True)
class CycleStart:
    """What the engine does to the LR schedule and optimizer when a new cycle starts.

    lr="rewind": the schedule (warm-up included) starts again from its step
    `lr_offset_steps` (0: from the start; IMP rewinding to step t passes t).
    lr="hold": the LR stays, for the whole cycle, at the value the last step used
    (fine-tuning, "FT" in soft-iep.txt Table 3).
    `reset_optimizer` drops momentum / Adam moments (rewinding methods do).
    """

    lr: Literal["rewind", "hold"] = "rewind"
    reset_optimizer: bool = True
    lr_offset_steps: int = 0

    def __post_init__(self) -> None:
        if self.lr not in ("rewind", "hold"):
            raise ValueError(f"CycleStart.lr must be 'rewind' or 'hold', got {self.lr!r}")
        if self.lr_offset_steps < 0:
            raise ValueError(f"CycleStart.lr_offset_steps must be >= 0, got {self.lr_offset_steps}")


@dataclass
class CycleEnd:
    """What a method reports when a cycle ends.

    metrics: logged as `cycle/<name>` at step = `Method.cycle_step` (e.g. "dying_ratio" ->
    `cycle/dying_ratio`), each quantity under one name; masks: written as
    `masks/cycle_XX.parquet`; tables: each written as `<name>/cycle_XX.parquet` (e.g. score
    ranks, visit histograms), XX the same number.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    masks: dict[str, Tensor] = field(default_factory=dict)
    tables: dict[str, pa.Table] = field(default_factory=dict)


@dataclass(frozen=True)
class Position:
    """Where training stands: completed optimizer steps and epochs, the running cycle."""

    step: int
    epoch: int
    cycle: int
    steps_per_epoch: int


@dataclass
class StepContext:
    """What a step hook may look at: the position, this rank's batch and the optimizer.

    `epoch` is the 0-based index of the running epoch; `step` the 0-based global step.
    `sample_batch(n)` draws another batch of n training examples (global size; this rank's
    slice, normalised and augmented like training batches) outside the epoch's order,
    seeded by the step, e.g. a larger batch for a DST update (appendix G); a method that
    runs a forward on it must leave BatchNorm statistics as it found them.
    Fields other than the step are optional so that tests can drive hooks by hand.
    """

    step: int
    epoch: int = 0
    cycle: int = 1
    steps_per_epoch: int = 1
    optimizer: torch.optim.Optimizer | None = None
    x: Tensor | None = None
    y: Tensor | None = None
    sample_batch: Callable[[int], tuple[Tensor, Tensor]] | None = None


@dataclass(frozen=True)
class Evaluator:
    """What the engine lends a method that evaluates models itself.

    evaluate(model): {"test_loss", "test_acc"} on the held-out split (a collective under DDP:
    every rank must call it the same number of times); recompute_bn(model, batches): reset
    every BatchNorm's running statistics and re-estimate them (cumulative average) from
    `batches` training batches of a fixed order (0: one epoch), leaving the model in eval mode.
    """

    evaluate: Callable[[nn.Module], dict[str, float]]
    recompute_bn: Callable[[nn.Module, int], None]


class Method:
    """Default hooks: plain dense training of every parameter, one cycle.

    A subclass names the config class it trains (`config_class`); `__init__` refuses any
    other and keeps the method's group as `self.method_cfg` (`self.cfg` is the whole config).
    """

    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    method_cfg: MethodConfig

    def __init__(self, cfg: ExperimentConfig) -> None:
        if not isinstance(cfg.method, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                            f"got {type(cfg.method).__name__}")
        self.cfg = cfg
        self.method_cfg = cfg.method

    # --- construction ---------------------------------------------------------------------
    def layer_factory(self) -> LayerFactory:
        """Which conv / linear / norm layers the model is built from."""
        raise NotImplementedError

    def init_model(self, model: nn.Module) -> None:
        """Initialise weights (and scores) after the model is built; seeded by the engine."""

    def trainable_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer parameter groups; frozen tensors must not appear here."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def cycle_plan(self) -> CyclePlan:
        """Cycles of this run; `schedule.epochs` is the length of one cycle."""
        return CyclePlan(count=self.cfg.method.cycle_count(), epochs=self.cfg.schedule.epochs)

    # --- training hooks (called by the engine) ----------------------------------------------
    def bind_evaluator(self, evaluator: Evaluator) -> None:
        """Once, before `on_train_start`: an evaluator for methods that measure models themselves."""

    def data_order(self, cycle: int, epoch: int, data_seed: int) -> tuple[int, int]:
        """(seed, epoch index) that fix the data order and augmentation of 0-based `epoch`.

        Default: the run's data seed and the global epoch. IMP replays each round's order
        (open_lth: seed + epoch within the training run) and gives its second copy another seed.
        """
        return data_seed, epoch

    def cycle_metric_prefix(self, cycle: int) -> str:
        """Names a side phase's engine metrics, per epoch and per cycle (`cycle/{prefix}test_acc`,
        `{prefix}test_acc`): "" for the method's own training."""
        return ""

    def cycle_step(self, cycle: int) -> int:
        """The number a reader gives the engine's `cycle` (IMP: its round): the step of its
        `cycle/` metrics and the XX of its cycle artifacts."""
        return cycle

    def observe_cycle_metrics(self, cycle: int, metrics: dict[str, float]) -> None:
        """The engine's metrics of the cycle's last epoch (test_acc, ...), before `end_of_cycle`."""

    def on_train_start(self, model: nn.Module, pos: Position) -> None:
        """Once, after init or after a checkpoint was restored (state already loaded)."""

    def begin_cycle(self, model: nn.Module, cycle: int) -> CycleStart:
        """Boundary into `cycle` (>= 2): prune / rewind / reinitialise; called once per boundary."""
        return CycleStart()

    def before_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Before forward/backward of global step `ctx.step` (0-based)."""

    def loss_term(self, model: nn.Module, ctx: StepContext) -> Tensor | None:
        """A term added to the task loss of this step (e.g. a repellent loss), or None."""
        return None

    def before_optimizer_step(self, model: nn.Module, ctx: StepContext) -> bool:
        """Gradients are ready; return True to skip this optimizer step (the LR still steps)."""
        return False

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """After `optimizer.step()` of global step `ctx.step`."""

    def end_of_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Metrics to report for the epoch just finished (1-based, counted over all cycles)."""
        return {}

    def end_of_cycle(self, model: nn.Module, cycle: int) -> CycleEnd:
        """Metrics and artifacts of the cycle just finished (1-based)."""
        return CycleEnd()

    # --- outputs ----------------------------------------------------------------------------
    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Current boolean masks by parameter name (empty for dense training)."""
        return {}

    # --- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """History the method keeps beyond the model (e.g. the OR of all masks seen)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
