"""The sweep driver: start Ray and the MLflow parent run, build or restore the Tuner, run it,
show and log the results. `orchestrator.sweep` (the CLI) has validated everything before this
starts; what can still fail here (the cluster, the storage, a trial) ends in one line too.

`run` is a sequence of named phases; each returns what the next needs, and the sweep's
outcome maps to one of the named exit codes below.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.settings import Settings, SweepLayout

if TYPE_CHECKING:
    from orchestrator.tracking.labels import SweepLabels
    from orchestrator.tracking.tracker import SweepTracker
    from search_spaces import Plan

logger = logging.getLogger(__name__)


class ExitCode(IntEnum):
    """The sweep's exit status, as the shell sees it."""

    OK = 0  # every trial finished
    TRIALS_FAILED = 1  # at least one trial ended in an error
    BAD_INPUT = 2  # refused before anything started (one line on stderr)
    STORAGE_FULL = 75  # EX_TEMPFAIL: the storage is full or not writable; resume once it is
    INTERRUPTED = 130  # Ctrl-C (or a trial not yet created): resume to finish


@dataclass
class Started:
    """What the start-up phase hands on: the MLflow side and the cluster's GPU answer."""

    tracker: SweepTracker
    labels: SweepLabels
    gpus: Any


def run(settings: Settings, plan: Plan, *, resume: bool, num_cpus: int | None, address: str | None,
        trial_fn: Any = None) -> int:
    """Run or resume the sweep; `trial_fn` replaces the trainable (benchmarks of the machinery)."""
    import ray

    layout = settings.layout
    metric = settings.metric or plan.space.metric
    mode = settings.mode or plan.space.mode
    _preflight(settings, layout, resume=resume, address=address)
    started = _start(settings, plan, layout, num_cpus=num_cpus, address=address)
    status = "FAILED"
    try:
        view_link = _open_parent(settings, plan, layout, started, metric, mode)
        tuner = _build_tuner(settings, plan, layout, started, metric, mode, resume=resume,
                             trial_fn=trial_fn)
        results = tuner.fit()  # returns early, state saved, when interrupted (Ctrl-C)
        status, code = _finish(settings, plan, layout, started.tracker, results, metric, mode,
                               view_link)
        return code
    finally:
        started.tracker.finish(status)
        from orchestrator.tracking.outbox import spool_hint

        if hint := spool_hint(started.tracker.outbox, settings.storage, settings.name):
            print(f"\n{hint}", file=sys.stderr)
        ray.shutdown()


def _preflight(settings: Settings, layout: SweepLayout, *, resume: bool, address: str | None) -> None:
    """What can be checked before Ray starts: the tracking server, Tune's saved state, the
    cluster's address and its authentication."""
    # Tune warns about experiment snapshots forced by CheckpointConfig(num_to_keep); they are
    # cheap here and the warning repeats every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A diverged trial's last report has no test metric on purpose (Optuna records it as
    # pruned); Tune would otherwise refuse any report without the sweep's metric.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    from orchestrator.cluster.resources import check_address, check_auth
    from orchestrator.cluster.security import stop_credential_copies
    from orchestrator.tracking.uris import check_tracking_server

    stop_credential_copies()  # Ray would log the driver's cloud keys in every trial's env
    check_tracking_server(settings.tracking_uri)
    if resume and not layout.remote:  # Tune's state cut short, checkpoints it lost
        from orchestrator.tuner.state import prepare_restore

        for note in prepare_restore(layout.sweep_dir):
            print(f"note: {note}", file=sys.stderr)
    check_address(address)
    check_auth(address)


def _start(settings: Settings, plan: Plan, layout: SweepLayout, *, num_cpus: int | None,
           address: str | None) -> Started:
    """Ray's start (processes to spawn and wait for) overlaps the imports and labels of the
    tracking side (the trainable's torch stack, MLflow: seconds of Python), which write
    nothing; MLflow's store is created only once the cluster has been checked to fit a trial,
    so a refused request leaves no store and no spool behind."""
    import ray

    from orchestrator.cluster.plugins import check_workers, plugin_runtime_env
    from orchestrator.cluster.resources import check_resources, connect
    from orchestrator.tracking.uris import fail_fast_http
    from trainables.plugins import LOADED

    fail_fast_http()
    with ThreadPoolExecutor(1, thread_name_prefix="sparsesweep-imports") as pool:
        prepared = pool.submit(_prepare_tracking, settings, plan)
        try:
            connect(address, num_cpus, plugin_runtime_env(settings.plugins))
            check_workers(list(LOADED))  # every node loads the plugins, or one line now
            gpus = check_resources(settings, plan, ray.cluster_resources(), remote=address is not None)
            labels = prepared.result()
            from orchestrator.tracking.tracker import SweepTracker

            tracker = SweepTracker(settings.tracking_uri, settings.experiment, Path(settings.storage),
                                   layout.spool_dir)
        except BaseException:
            ray.shutdown()
            raise
    return Started(tracker, labels, gpus)


def _prepare_tracking(settings: Settings, plan: Plan) -> SweepLabels:
    """Everything of the tracking side that writes nothing: the imports of the trainable's
    module (torch's compiler stack, ray.train: ~1.5 s) and of MLflow, the runs' labels, and
    each data config's MLflow dataset (`dataset_input` keeps it for the sweep: the trials'
    first start does not compute it)."""
    import orchestrator.tracking.tracker  # noqa: F401 - MLflow's client
    import trainables.tune  # noqa: F401
    from orchestrator.tracking.labels import SweepLabels, dataset_input
    from orchestrator.tracking.uris import scheme

    if scheme(settings.tracking_uri) in ("http", "https"):
        import mlflow.store.tracking.rest_store  # noqa: F401
    else:  # SQLite or another database: SQLAlchemy and alembic (~2 s)
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

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
    return labels


def _open_parent(settings: Settings, plan: Plan, layout: SweepLayout, started: Started,
                 metric: str, mode: str) -> str:
    """The sweep's parent run (created, or found again on resume) and its saved view; the
    settings are saved with the parent's id. Returns the link to the view."""
    from orchestrator.tracking.views import view_url

    tracker, labels = started.tracker, started.labels
    grid_trials = len(plan.points()) if plan.search == "grid" else 0
    view_tag, view = labels.shared_view(metric, mode)
    view_link = view_url(settings.tracking_uri, tracker.experiment_id, labels.view_key())
    params = {"space": plan.space.name, "search": plan.search,
              # typed as the trials got them: 0.5, not "0.5000"
              **{f"set.{k}": plan.base.get(k, v) for k, v in settings.sets.items()},
              # --grid overrides: the report rebuilds the command
              **{f"grid.{k}": ",".join(map(str, v)) for k, v in settings.grids.items()},
              "grid_trials": grid_trials,
              "num_samples": plan.num_samples,
              "workers_per_trial": settings.workers_per_trial}
    settings.parent_run_id = tracker.start(
        settings.name, params=params,
        tags={"sparsesweep.space": plan.space.name, **labels.parent_tags(), **_study_tag(settings),
              **_plugin_tags()},
        resume_run_id=settings.parent_run_id,
        run_name=labels.parent_run_name(grid_trials or plan.num_samples),
        note=labels.parent_note(settings.command, plan, view_link),
        experiment_tags={view_tag: view})
    if settings.space_file:
        _keep_space_file(settings, layout, tracker)
    if not layout.remote:
        layout.write_settings(settings)
    return view_link


def _plugin_tags() -> dict[str, str]:
    """The plugins the sweep loaded (module and where found), as the parent run's tag."""
    from trainables.plugins import LOADED

    return {"sparsesweep.plugins": ", ".join(f"{m} ({how})" for m, how in LOADED.items())} if LOADED else {}


def _keep_space_file(settings: Settings, layout: SweepLayout, tracker: SweepTracker) -> None:
    """A --space file: copied into the sweep folder (what --resume reads) and logged to the
    parent run, once; a resumed sweep already reads the copy."""
    import shutil

    source = Path(settings.space_file)
    if layout.remote:
        tracker.log_artifact(source, "")
        return
    copy = layout.space_copy(source.suffix)
    if source == copy:
        return
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, copy)
    settings.space_file = str(copy)
    tracker.log_artifact(copy, "")


def _build_tuner(settings: Settings, plan: Plan, layout: SweepLayout, started: Started,
                 metric: str, mode: str, *, resume: bool, trial_fn: Any) -> Any:
    """A new Tuner, or Tune's own restored one (its pickled RunConfig, our MLflow callback in it)."""
    from ray import tune

    from orchestrator.cluster.nodes import with_node_id
    from orchestrator.cluster.resources import trial_resources, worker_gpus
    from trainables.tune import Runtime, trial  # imported by _prepare_tracking, while Ray started

    gpus = started.gpus
    runtime = Runtime(workers=settings.workers_per_trial, use_gpu=worker_gpus(gpus) > 0,
                      cpus_per_worker=settings.cpus_per_worker, gpus_per_worker=worker_gpus(gpus),
                      ddp_storage=layout.ddp_storage)
    # the trial draws its mask figure, titled with its run name (the driver only uploads it)
    fn = tune.with_parameters(trial_fn or trial, variants=plan.variants, runtime=runtime,
                              **({} if trial_fn else {"figure_title": started.labels.run_name}))
    trainable = tune.with_resources(with_node_id(fn), trial_resources(settings, gpus, plan))
    if resume:
        return tune.Tuner.restore(layout.sweep_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)
    from orchestrator.tracking.callback import MLflowTrialCallback

    callback = MLflowTrialCallback(
        settings.tracking_uri, started.tracker.experiment_id, settings.parent_run_id,
        resolve_params=lambda c: plan.resolve(c).to_flat(), spool_dir=layout.spool_dir,
        labels=started.labels)
    tune_config, marker = _tune_config(plan, settings, layout, metric, mode)
    return tune.Tuner(trainable, param_space=_param_space(plan), tune_config=tune_config,
                      run_config=tune.RunConfig(
                          name=settings.name, storage_path=layout.tune_root,
                          # the marker edits results first
                          callbacks=[*marker, callback, *_state_backup(layout)],
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                          failure_config=tune.FailureConfig(max_failures=settings.max_failures)))


def _finish(settings: Settings, plan: Plan, layout: SweepLayout, tracker: SweepTracker,
            results: Any, metric: str, mode: str, view_link: str) -> tuple[str, ExitCode]:
    """The results table and report, where to find everything, and the outcome: the parent
    run's final status and the exit code."""
    from orchestrator.recovery import count_status, failed_for_storage
    from orchestrator.report.sweep_end import report_sweep
    from orchestrator.results import results_table, show_results, unfinished_trials
    from orchestrator.tracking.uris import runnable, tracking_ui_command

    df = results_table(results, plan, metric, mode)
    errors = int((df["status"] == "ERROR").sum()) if len(df) else 0
    # an interrupt between two trials leaves the next one not yet created: not in `df` at all
    incomplete = unfinished_trials(df, plan)
    status = "KILLED" if incomplete else ("FINISHED" if errors == 0 else "FAILED")
    for path in show_results(df, results, plan, metric, mode, layout.local_dir):
        tracker.log_artifact(path, "")
    index = report_sweep(settings.tracking_uri, settings.experiment, settings.parent_run_id,
                         layout.report_dir)
    if index is not None:
        print(f"\nReport: {index}" + (" (also in MLflow, the parent run's report/)" if not layout.remote
                                      else " (logged to the parent run's report/)"))
    ui = runnable(tracking_ui_command(settings.tracking_uri, settings.name))
    if view_link.startswith("#"):  # a local store: the UI command prints the link on its port
        print(f"\nMLflow: {ui}  (or `make ui`; prints the one link to this sweep's saved view)")
    else:
        print(f"\nMLflow: {ui}\nThis sweep in MLflow's runs table: {view_link}")
    print(f"Tune results and checkpoints: {layout.sweep_path}")
    if diverged := count_status(df, "DIVERGED"):
        print(f"{diverged} trial(s) diverged (loss NaN/inf): stopped at once, status DIVERGED; "
              f"the others ran on", file=sys.stderr)
    resume_cmd = f"python -m orchestrator.sweep --storage {settings.storage} --resume {settings.name}"
    if full := failed_for_storage(results):
        print(f"\nerror: {len(full)} trial(s) stopped because the storage is full or not "
              f"writable ({full[0]}); free space, then resume with:\n  {resume_cmd}", file=sys.stderr)
        return status, ExitCode.STORAGE_FULL
    if incomplete:
        print(f"\n{incomplete} trial(s) did not finish; continue the sweep with:\n  {resume_cmd}",
              file=sys.stderr)
        return status, ExitCode.INTERRUPTED
    return status, ExitCode.OK if errors == 0 else ExitCode.TRIALS_FAILED


def _study_tag(settings: Settings) -> dict[str, str]:
    """The parent run of a driver that joined a shared Optuna study (cluster.shared_db)."""
    if not settings.study:
        return {}
    from orchestrator.tracking.tags import STUDY_TAG

    return {STUDY_TAG: settings.study}


def _state_backup(layout: SweepLayout) -> list[Any]:
    """A copy of Tune's last readable state for --resume (tuner.state); local storage only."""
    if layout.remote:
        return []
    from orchestrator.tuner.state import TuneStateBackup

    return [TuneStateBackup(layout.sweep_path)]


def _param_space(plan: Plan) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = dict(plan.base)
    if plan.search == "grid":
        space.update({k: tune.grid_search(list(v)) for k, v in plan.grid.items()})
        if plan.variants:
            space["variant"] = tune.grid_search(list(plan.variants))
    return space


def _tune_config(plan: Plan, settings: Settings, layout: SweepLayout, metric: str,
                 mode: str) -> tuple[Any, list[Any]]:
    """TuneConfig (searcher, scheduler) and the callbacks the scheduler needs before MLflow's."""
    from ray import tune

    search_alg = None
    if plan.search == "optuna":
        from orchestrator.tuner.searchers import allow_missing_metric
        from orchestrator.tuner.study import make_searcher

        url = settings.optuna_storage or layout.default_study_url()
        if not url:
            print("note: the Optuna study is kept in memory (--storage is a URI); give "
                  "--optuna-storage to keep it in a database", file=sys.stderr)
        from orchestrator.cluster.shared_db import driver_seed

        seed = driver_seed(settings.optuna_seed, settings.name) if settings.study else settings.optuna_seed
        search_alg = make_searcher(plan, sampler=settings.sampler, seed=seed, storage_url=url,
                                   study_name=settings.study or settings.name, metric=metric, mode=mode)
        search_alg = allow_missing_metric(search_alg)  # a diverged trial ends with no score: pruned
    scheduler, marker = None, []
    if settings.scheduler == "asha":
        from orchestrator.tuner.asha import RungState, build_scheduler

        scheduler, stop_marker = build_scheduler(plan, grace_period=settings.grace_period,
                                                 reduction_factor=settings.reduction_factor)
        marker = [stop_marker, RungState(scheduler)]  # the rungs survive --resume
    # reuse_actors: a trial's process (torch, data code already imported) runs the next trial of
    # the same resource shape; benchmarks/orchestration_overhead.py measures the difference.
    return tune.TuneConfig(metric=metric, mode=mode, search_alg=search_alg, scheduler=scheduler,
                           num_samples=plan.num_samples, max_concurrent_trials=settings.max_concurrent,
                           reuse_actors=settings.reuse_actors), marker
