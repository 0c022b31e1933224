"""Early stopping: `--scheduler asha`, in epochs, or in cycles for iterative methods.

Ray Tune's ASHAScheduler does the work (`orchestrator.tuner.asha` holds the Ray classes; this module
stays importable without Ray, for validation and the results table). Two things are ours:

- **The unit.** A sweep whose trials all train several cycles (iep, dense_lrr) puts a rung at
  cycle ends: grace period and reduction factor count cycles, and a trial is compared by the
  metric at the end of a cycle, the point where it is evaluated on its own terms (a cycle's
  first epochs follow a prune step). `asha.CycleASHA` lets ASHA see only cycle-end results.
  Every other sweep counts epochs.
- **The record.** Tune ends a stopped trial the way it ends a finished one.
  `orchestrator.tuner.asha.StopMarker`, a Tune callback placed before the MLflow callback, adds
  `stopped_at_epoch` (or `stopped_at_cycle`) to the result on which the scheduler stopped the
  trial. That key then reaches the trial's last result, Tune's own result files (so it
  survives `--resume`), the MLflow run (a metric, and the `sparsesweep.stopped_at` tag), and
  the results table (status STOPPED).

How a stop is recognised: Tune sets `done` on the result on which a scheduler returns STOP,
before callbacks see it; the natural end of a function trainable arrives as a separate
result that callbacks do not see. A `done` result before the trial's last epoch or cycle
is therefore a scheduler's stop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from trainables.config import ConfigError
from trainables.keys import CYCLE_TEST_ACC

if TYPE_CHECKING:
    from search_spaces import Plan

SCHEDULERS: tuple[str, ...] = ("fifo", "asha")
CYCLE_END_KEY = CYCLE_TEST_ACC  # the engine reports it at every cycle's last epoch only
STOPPED_PREFIX = "stopped_at_"


def time_unit(plan: Plan) -> str:
    """'cycle' when every trial trains several cycles, else 'epoch'."""
    configs = plan.trial_configs()
    return "cycle" if configs and all(c.method.cycle_count() > 1 for c in configs) else "epoch"


def trial_length(plan: Plan, unit: str) -> Callable[[Mapping[str, Any]], int]:
    if unit == "cycle":
        return lambda config: plan.resolve(config).method.cycle_count()
    return lambda config: plan.resolve(config).total_epochs


def check_asha_args(plan: Plan, scheduler: str, grace_period: int | None,
                    reduction_factor: float | None) -> None:
    """One line naming the flag when the combination cannot work."""
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler: {scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if scheduler != "asha":
        for flag, value in (("--grace-period", grace_period), ("--reduction-factor", reduction_factor)):
            if value is not None:
                raise ConfigError(f"{flag}: applies to --scheduler asha only")
        return
    unit = time_unit(plan)
    shortest = min(trial_length(plan, unit)(c.to_flat()) for c in plan.trial_configs())
    grace = 1 if grace_period is None else grace_period
    if grace < 1:
        raise ConfigError(f"--grace-period: {grace} must be >= 1 ({unit}s)")
    if grace >= shortest:
        raise ConfigError(f"--grace-period: {grace} leaves no rung before the end (the shortest trial "
                          f"trains {shortest} {unit}s); use 1..{shortest - 1}")
    if reduction_factor is not None and not reduction_factor > 1:
        raise ConfigError(f"--reduction-factor: {reduction_factor:g} must be > 1 (e.g. 2, 3 or 4)")


def stopped_at(metrics: Mapping[str, Any]) -> tuple[str, int] | None:
    """(unit, value) when the trial was stopped early, from its last metrics."""
    for unit in ("epoch", "cycle"):
        value = metrics.get(STOPPED_PREFIX + unit)
        if value is not None and value == value:  # not NaN
            return unit, int(value)
    return None


def stop_tag(metrics: Mapping[str, Any]) -> str | None:
    """The MLflow tag value of an early-stopped trial ('epoch 3'), else None."""
    found = stopped_at(metrics)
    return None if found is None else f"{found[0]} {found[1]}"


def describe_stops(stops: list[tuple[str, int] | None], total: int) -> str | None:
    """'ASHA stopped 3 of 8 trials: 2 at epoch 1, 1 at epoch 4' (None when none stopped)."""
    found = [s for s in stops if s is not None]
    if not found:
        return None
    counts: dict[tuple[str, int], int] = {}
    for s in found:
        counts[s] = counts.get(s, 0) + 1
    parts = ", ".join(f"{n} at {unit} {at}" for (unit, at), n in sorted(counts.items(), key=lambda kv: kv[0][1]))
    return f"ASHA stopped {len(found)} of {total} trials early: {parts}"
