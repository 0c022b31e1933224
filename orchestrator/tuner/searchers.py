"""Optuna through Tune when a trial may report no score: a diverged trial, or an epoch that
was not evaluated (`run.eval_every > 1`).

Ray's `OptunaSearch.on_trial_result` reads the metric of every report and raises KeyError
when it is missing, which stops the whole sweep. A report without the metric carries no
information for the sampler, so it is skipped. At the end, a trial whose last report has no
metric is told to Optuna as PRUNED (Ray's own rule in `on_trial_complete`), which is what a
diverged trial is: a failed configuration, not a number.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class MetricOptionalOptunaSearch(OptunaSearch):
    """OptunaSearch that skips intermediate reports without its metric."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if all(m in result and result[m] is not None for m in metrics):
            super().on_trial_result(trial_id, result)


def allow_missing_metric(searcher: Any) -> Any:
    """The same searcher, as MetricOptionalOptunaSearch when it is a plain OptunaSearch."""
    if type(searcher) is OptunaSearch:
        searcher.__class__ = MetricOptionalOptunaSearch
    return searcher
