"""Ray Tune's ASHA for sparsesweep: rungs at epochs or cycle ends, and a record of its stops.

Why each piece exists is in `orchestrator.tuner.schedulers`, which has no Ray import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from orchestrator.tuner.schedulers import STOPPED_PREFIX, time_unit, trial_length
from search_spaces import Plan
from trainables.keys import CYCLE_END_KEY


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


class RungState(Callback):
    """Keeps ASHA's rungs across `--resume`.

    Tune checkpoints its searcher and its callbacks, but not its scheduler: a restored sweep
    starts ASHA with empty rungs, so a resumed trial is compared with nothing and runs on where
    the uninterrupted sweep would have stopped it. This callback carries the rungs in Tune's
    callback state. It shares the scheduler object with TuneConfig in Tune's pickled Tuner, so
    `Tuner.restore` hands back both, still joined, before it re-adds the trials."""

    def __init__(self, scheduler: ASHAScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:
        brackets = self.scheduler._brackets
        index = {id(b): i for i, b in enumerate(brackets)}
        return {"rungs": [[(milestone, dict(recorded)) for milestone, recorded in b._rungs] for b in brackets],
                "trial_bracket": {t: index[id(b)] for t, b in self.scheduler._trial_info.items()},
                "num_stopped": self.scheduler._num_stopped}

    def set_state(self, state: dict[str, Any]) -> None:
        brackets = self.scheduler._brackets
        if len(state["rungs"]) != len(brackets):
            return  # another ASHA shape: nothing of the old rungs applies
        for bracket, rungs in zip(brackets, state["rungs"], strict=True):
            bracket._rungs = [(milestone, dict(recorded)) for milestone, recorded in rungs]
        self.scheduler._trial_info.update({t: brackets[i] for t, i in state["trial_bracket"].items()})
        self.scheduler._num_stopped = state["num_stopped"]


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
