"""The sweep driver: start Ray and the MLflow parent run, build or restore the Tuner, run it,
show and log the results. `orchestrator.sweep` (the CLI) has validated everything before this
starts; what can still fail here (the cluster, the storage, a trial) ends in one line too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.sweep import (
    STATE_FILE,
    Settings,
    _is_uri,
    _tune_root,
    check_tracking_server,
    runnable,
)

if TYPE_CHECKING:
    from orchestrator.mlflow_ui import SweepLabels
    from orchestrator.tracking import SweepTracker
    from search_spaces import Plan

logger = logging.getLogger(__name__)


def _write_state(sweep_dir: Path, settings: Settings) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = sweep_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(settings), indent=2))
    os.replace(tmp, sweep_dir / STATE_FILE)


def run(settings: Settings, plan: Plan, *, resume: bool, num_cpus: int | None, address: str | None,
        trial_fn: Any = None) -> int:
    """Run or resume the sweep; `trial_fn` replaces the trainable (benchmarks of the machinery)."""
    # Tune warns about experiment snapshots forced by CheckpointConfig(num_to_keep); they are
    # cheap here and the warning repeats every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A diverged trial's last report has no test metric on purpose (Optuna records it as
    # pruned); Tune would otherwise refuse any report without the sweep's metric.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    import ray
    from ray import tune

    from orchestrator.security import stop_credential_copies

    stop_credential_copies()  # Ray would log the driver's cloud keys in every trial's env

    from orchestrator.nodes import with_node_id
    from orchestrator.recovery import count_status, failed_for_storage, spool_dir_for
    from orchestrator.resources import (
        check_address,
        check_auth,
        check_resources,
        connect,
        trial_resources,
        worker_gpus,
    )
    from orchestrator.results import results_table, show_results, unfinished_trials
    from orchestrator.tracking import (
        MLflowTrialCallback,
        fail_fast_http,
        spool_hint,
        tracking_ui_command,
    )

    space = plan.space
    metric = settings.metric or space.metric
    mode = settings.mode or space.mode
    tune_root = _tune_root(settings.storage)
    sweep_path = f"{tune_root}/{settings.name}"
    check_tracking_server(settings.tracking_uri)
    if resume and not _is_uri(settings.storage):  # Tune's state cut short, checkpoints it lost
        from orchestrator.tune_state import prepare_restore

        for note in prepare_restore(Path(sweep_path)):
            print(f"note: {note}", file=sys.stderr)

    check_address(address)
    check_auth(address)

    spool_dir = spool_dir_for(settings.storage, settings.name)  # MLflow writes wait here in an outage
    fail_fast_http()
    # Ray's start (processes to spawn and wait for) and MLflow's (a new SQLite store migrates
    # its schema: seconds of Python; the trainable's imports) overlap: the driver's fixed cost,
    # before any trial runs.
    with ThreadPoolExecutor(1, thread_name_prefix="sparsesweep-mlflow") as pool:
        mlflow_ready = pool.submit(_open_tracking, settings, plan, spool_dir)
        connect(address, num_cpus)
        try:
            gpus = check_resources(settings, plan, ray.cluster_resources(), remote=address is not None)
            tracker, labels = mlflow_ready.result()
        except BaseException:
            ray.shutdown()
            raise
    from orchestrator.mlflow_ui import view_url
    from trainables.tune import Runtime, trial  # imported by _open_tracking, while Ray started

    grid_trials = len(plan.points()) if plan.search == "grid" else 0
    view_tag, view = labels.shared_view(metric, mode)
    view_link = view_url(settings.tracking_uri, tracker.experiment_id, labels.view_key())
    parent = tracker.start(settings.name, params={"space": space.name, "search": plan.search,
                                                  # typed as the trials got them: 0.5, not "0.5000"
                                                  **{f"set.{k}": plan.base.get(k, v) for k, v in settings.sets.items()},
                                                  # --grid overrides: the report rebuilds the command
                                                  **{f"grid.{k}": ",".join(map(str, v))
                                                     for k, v in settings.grids.items()},
                                                  "grid_trials": grid_trials,
                                                  "num_samples": plan.num_samples,
                                                  "workers_per_trial": settings.workers_per_trial},
                           tags={"sparsesweep.space": space.name, **labels.parent_tags(),
                                 **_study_tag(settings)},
                           resume_run_id=settings.parent_run_id,
                           run_name=labels.parent_run_name(grid_trials or plan.num_samples),
                           note=labels.parent_note(settings.command, plan, view_link),
                           experiment_tags={view_tag: view})
    settings.parent_run_id = parent
    if not _is_uri(settings.storage):
        _write_state(Path(sweep_path), settings)

    runtime = Runtime(workers=settings.workers_per_trial, use_gpu=worker_gpus(gpus) > 0,
                      cpus_per_worker=settings.cpus_per_worker, gpus_per_worker=worker_gpus(gpus),
                      ddp_storage=f"{sweep_path}/ddp")
    # the trial draws its mask figure, titled with its run name (the driver only uploads it)
    fn = tune.with_parameters(trial_fn or trial, variants=plan.variants, runtime=runtime,
                              **({} if trial_fn else {"figure_title": labels.run_name}))
    trainable = tune.with_resources(with_node_id(fn), trial_resources(settings, gpus, plan))
    status = "FAILED"
    try:
        if resume:  # Tune restores its RunConfig, our (picklable) MLflow callback included
            tuner = tune.Tuner.restore(sweep_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            callback = MLflowTrialCallback(
                settings.tracking_uri, tracker.experiment_id, parent,
                resolve_params=lambda c: plan.resolve(c).to_flat(), spool_dir=spool_dir, labels=labels)
            tune_config, marker = _tune_config(plan, settings, metric, mode, sweep_path)
            tuner = tune.Tuner(trainable, param_space=_param_space(plan),
                               tune_config=tune_config,
                               run_config=tune.RunConfig(
                                   name=settings.name, storage_path=tune_root,
                                   # the marker edits results first
                                   callbacks=[*marker, callback, *_state_backup(settings, sweep_path)],
                                   checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                   failure_config=tune.FailureConfig(max_failures=settings.max_failures)))
        results = tuner.fit()  # returns early, state saved, when interrupted (Ctrl-C)
        df = results_table(results, plan, metric, mode)
        errors = int((df["status"] == "ERROR").sum()) if len(df) else 0
        # an interrupt between two trials leaves the next one not yet created: not in `df` at all
        incomplete = unfinished_trials(df, plan)
        status = "KILLED" if incomplete else ("FINISHED" if errors == 0 else "FAILED")
        out_dir = None if _is_uri(settings.storage) else Path(sweep_path)
        for path in show_results(df, results, plan, metric, mode, out_dir, figures=False):
            tracker.log_artifact(path, "")
        from orchestrator.report.sweep_end import report_sweep

        index = report_sweep(settings.tracking_uri, settings.experiment, parent,
                             None if out_dir is None else out_dir / "report")
        if index is not None:
            print(f"\nReport: {index}" + (" (also in MLflow, the parent run's report/)" if out_dir else
                                          " (logged to the parent run's report/)"))
        print(f"\nMLflow: {runnable(tracking_ui_command(settings.tracking_uri))}")
        print(f"This sweep in MLflow's runs table: {view_link}")
        print(f"Tune results and checkpoints: {sweep_path}")
        if diverged := count_status(df, "DIVERGED"):
            print(f"{diverged} trial(s) diverged (loss NaN/inf): stopped at once, status DIVERGED; "
                  f"the others ran on", file=sys.stderr)
        if full := failed_for_storage(results):
            print(f"\nerror: {len(full)} trial(s) stopped because the storage is full or not "
                  f"writable ({full[0]}); free space, then resume with:\n  python -m orchestrator.sweep "
                  f"--storage {settings.storage} --resume {settings.name}", file=sys.stderr)
            return 75
        if incomplete:
            print(f"\n{incomplete} trial(s) did not finish; continue the sweep with:\n  python -m "
                  f"orchestrator.sweep --storage {settings.storage} --resume {settings.name}", file=sys.stderr)
            return 130
        return 0 if errors == 0 else 1
    finally:
        tracker.finish(status)
        if hint := spool_hint(tracker.outbox, settings.storage, settings.name):
            print(f"\n{hint}", file=sys.stderr)
        ray.shutdown()


def _open_tracking(settings: Settings, plan: Plan,
                   spool_dir: Path | None) -> tuple[SweepTracker, SweepLabels]:
    """MLflow's store and experiment, the runs' labels, and each data config's MLflow dataset
    (`dataset_input` keeps it for the sweep: the trials' first start does not compute it).
    Imports the trainable's module first (torch's compiler stack, ray.train: ~1.5 s)."""
    import trainables.tune  # noqa: F401
    from orchestrator.mlflow_ui import SweepLabels, dataset_input
    from orchestrator.tracking import SweepTracker

    tracker = SweepTracker(settings.tracking_uri, settings.experiment, Path(settings.storage), spool_dir)
    labels = SweepLabels.from_plan(plan, settings.name)  # run names, tags, note (MLflow's UI)
    # one config per distinct data setting (data.* keys, variant) of the grid; Optuna's base
    points = plan.points() if plan.search == "grid" else [dict(plan.base)]
    distinct = {json.dumps(sorted((k, str(v)) for k, v in p.items()
                                  if k.startswith("data.") or k == "variant")): p for p in points}
    try:
        for point in distinct.values():
            dataset_input(plan.resolve(point).to_flat())
    except Exception:  # an unreadable data dir: each trial's start says so (tracking)
        logger.debug("dataset inputs not prepared", exc_info=True)
    return tracker, labels


def _study_tag(settings: Settings) -> dict[str, str]:
    """The parent run of a driver that joined a shared Optuna study (orchestrator.cluster.shared_db)."""
    if not settings.study:
        return {}
    from orchestrator.cluster.shared_db import STUDY_TAG

    return {STUDY_TAG: settings.study}


def _state_backup(settings: Settings, sweep_path: str) -> list[Any]:
    """A copy of Tune's last readable state for --resume (orchestrator.tune_state); local storage."""
    if _is_uri(settings.storage):
        return []
    from orchestrator.tune_state import TuneStateBackup

    return [TuneStateBackup(sweep_path)]


def _param_space(plan: Plan) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = dict(plan.base)
    if plan.search == "grid":
        space.update({k: tune.grid_search(list(v)) for k, v in plan.grid.items()})
        if plan.variants:
            space["variant"] = tune.grid_search(list(plan.variants))
    return space


def _tune_config(plan: Plan, settings: Settings, metric: str, mode: str,
                 sweep_path: str) -> tuple[Any, list[Any]]:
    """TuneConfig (searcher, scheduler) and the callbacks the scheduler needs before MLflow's."""
    from ray import tune

    search_alg = None
    if plan.search == "optuna":
        from orchestrator.study import default_storage_url, make_searcher

        url = settings.optuna_storage or ("" if _is_uri(sweep_path) else default_storage_url(Path(sweep_path)))
        if not url:
            print("note: the Optuna study is kept in memory (--storage is a URI); give "
                  "--optuna-storage to keep it in a database", file=sys.stderr)
        from orchestrator.cluster.shared_db import driver_seed

        seed = driver_seed(settings.optuna_seed, settings.name) if settings.study else settings.optuna_seed
        search_alg = make_searcher(plan, sampler=settings.sampler, seed=seed, storage_url=url,
                                   study_name=settings.study or settings.name, metric=metric, mode=mode)
        from orchestrator.searchers import allow_missing_metric

        search_alg = allow_missing_metric(search_alg)  # a diverged trial ends with no score: pruned
    scheduler, marker = None, []
    if settings.scheduler == "asha":
        from orchestrator.asha import RungState, build_scheduler

        scheduler, stop_marker = build_scheduler(plan, grace_period=settings.grace_period,
                                                 reduction_factor=settings.reduction_factor)
        marker = [stop_marker, RungState(scheduler)]  # the rungs survive --resume
    # reuse_actors: a trial's process (torch, data code already imported) runs the next trial of
    # the same resource shape; benchmarks/orchestration_overhead.py measures the difference.
    return tune.TuneConfig(metric=metric, mode=mode, search_alg=search_alg, scheduler=scheduler,
                           num_samples=plan.num_samples, max_concurrent_trials=settings.max_concurrent,
                           reuse_actors=settings.reuse_actors), marker
