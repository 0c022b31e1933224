"""The optimizer and the per-step, cycle-aware learning-rate schedule the engine trains with."""

from __future__ import annotations

import math
from typing import Any

import torch

from trainables.config import ExperimentConfig


def build_optimizer(cfg: ExperimentConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    o = cfg.optim
    given = groups
    groups = [{"weight_decay": o.weight_decay, **g} for g in given]
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr)
    if o.name == "lars":
        from timm.optim import Lars  # well-kept implementation; imported lazily (timm is heavy)

        # timm adapts only groups with weight decay (apex LARC): with optim.weight_decay=0 LARS
        # would silently be SGD. Adapt every group but those a method exempts from decay.
        for g, own in zip(groups, given, strict=True):
            g["always_adapt"] = "weight_decay" not in own
        return Lars(groups, lr=o.lr, momentum=o.momentum, trust_coeff=o.lars_trust_coeff)
    raise ValueError(f"optim.name: unknown optimizer {o.name!r}")  # validated earlier


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str,
              milestone_steps: tuple[int, ...] = (), gamma: float = 0.1) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based), stepped per iteration.

    Warm-up rises linearly to 1 over `warmup_steps` ((step+1)/warmup, so step 0 already
    trains); cosine then decays as 0.5·(1 + cos(π·t/T)) with t, T counted after warm-up;
    step multiplies by gamma at each milestone passed.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    if schedule == "step":
        return gamma ** sum(step >= m for m in milestone_steps)
    return 1.0


class LRSchedule:
    """Multiplier of each group's peak LR at global step `step`, aware of cycles.

    A callable object (not a closure) so that `LambdaLR.state_dict()` saves its attributes:
    `origin` (global step at which the running cycle's schedule started), `offset` (schedule
    step it started from) and `hold` (a constant factor for the whole cycle, or None).
    Each cycle's schedule spans `schedule.epochs` epochs, warm-up included.
    """

    def __init__(self, *, total_steps: int, warmup_steps: int, schedule: str,
                 milestone_steps: tuple[int, ...] = (), gamma: float = 0.1) -> None:
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.schedule = schedule
        self.milestone_steps = tuple(milestone_steps)
        self.gamma = gamma
        self.origin = 0
        self.offset = 0
        self.hold: float | None = None

    def __call__(self, step: int) -> float:
        if self.hold is not None:
            return self.hold
        return lr_factor(step - self.origin + self.offset, total_steps=self.total_steps,
                         warmup_steps=self.warmup_steps, schedule=self.schedule,
                         milestone_steps=self.milestone_steps, gamma=self.gamma)

    def restart(self, at_step: int, *, lr: str, offset: int = 0) -> None:
        """A new cycle starts at global step `at_step`: rewind to `offset`, or hold the last LR."""
        if lr == "hold":
            self.hold = self(at_step - 1) if at_step > 0 else self(0)
        else:
            self.hold = None
            self.origin, self.offset = at_step, offset


def build_scheduler(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer,
                    spe: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR over one cycle of `schedule.epochs` epochs of `spe` steps."""
    s = cfg.schedule
    schedule = LRSchedule(total_steps=s.epochs * spe, warmup_steps=s.warmup_epochs * spe,
                          schedule=s.name, milestone_steps=s.milestone_steps(spe),
                          gamma=s.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def lr_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR) -> LRSchedule:
    schedule = scheduler.lr_lambdas[0]  # one object shared by every parameter group
    assert isinstance(schedule, LRSchedule)
    return schedule


def set_lr(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Put every group's LR at the schedule's value for global `step` (the next one to run)."""
    factor = scheduler.lr_lambdas[0](step)
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * factor
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
