"""Ray Tune's ASHA for sparsesweep: rungs at epochs or cycle ends, and a record of its stops.

Why each piece exists is in `orchestrator.schedulers`, which has no Ray import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from orchestrator.schedulers import CYCLE_END_KEY, STOPPED_PREFIX, time_unit, trial_length
from search_spaces import Plan


class CycleASHA(ASHAScheduler):
    """ASHA (time_attr='cycle') that judges a trial only on the results that end a cycle."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if CYCLE_END_KEY not in result:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class StopMarker(Callback):
    """Adds `stopped_at_<unit>` to the result on which a scheduler stopped a trial.

    Tune sets `done` on that result before callbacks see it (and lets them edit it), while a
    trial that simply ends sends its last real result with `done` unset. A `done` result
    before the trial's own last epoch (cycle) is a stop."""

    def __init__(self, unit: str, length: Callable[[Mapping[str, Any]], int]) -> None:
        self.unit = unit
        self.length = length

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if not result.get("done"):
            return
        at = result.get(self.unit)
        if at is not None and int(at) < self.length(trial.config):
            result[STOPPED_PREFIX + self.unit] = int(at)


def build_scheduler(plan: Plan, *, grace_period: int | None, reduction_factor: float | None
                    ) -> tuple[ASHAScheduler, StopMarker]:
    """ASHA over the plan's unit (metric and mode come from TuneConfig: Tune refuses both)."""
    unit = time_unit(plan)
    length = trial_length(plan, unit)
    max_t = max(length(c.to_flat()) for c in plan.trial_configs())
    cls = CycleASHA if unit == "cycle" else ASHAScheduler
    scheduler = cls(time_attr=unit, max_t=max_t, grace_period=grace_period or 1,
                    reduction_factor=reduction_factor or 4, stop_last_trials=False)
    return scheduler, StopMarker(unit, length)
