"""`python -m orchestrator.sweep`: parse, validate, build the Tuner, run or resume, show results.

Everything a user can get wrong is checked before Ray starts or an MLflow run is created:
a bad key, value, space, path or resource request ends with one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search_spaces import DEFAULT_SPACE, REGISTRY, Plan, get_space, make_plan
from trainables.config import ConfigError, describe_keys
from trainables.data import check_available

STATE_FILE = "sparsesweep.json"
METRICS = ("test_acc", "test_loss", "train_acc", "train_loss", "dying_ratio", "k_minus_dying")


@dataclass
class Settings:
    """What defines a sweep beyond its space; saved beside it so `--resume` needs nothing else."""

    space: str = DEFAULT_SPACE
    search: str = "grid"
    sets: dict[str, str] = field(default_factory=dict)
    grids: dict[str, list[str]] = field(default_factory=dict)
    num_samples: int | None = None
    max_concurrent: int = 2
    max_failures: int = 0
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    metric: str | None = None
    mode: str | None = None
    optuna_seed: int = 0
    name: str = ""
    storage: str = ""
    tracking_uri: str = ""
    experiment: str = ""
    parent_run_id: str | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m orchestrator.sweep",
        description="Run a named search space of sparse-training experiments as Ray Tune trials, "
                    "tracked in MLflow.")
    p.add_argument("--list-spaces", action="store_true", help="list the named search spaces and exit")
    p.add_argument("--list-keys", action="store_true", help="list every config key with its default and exit")
    p.add_argument("--space", default=DEFAULT_SPACE, help=f"named search space (default {DEFAULT_SPACE})")
    p.add_argument("--search", default="grid", help="grid (the paper's ablation) or optuna")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every trial (pins a grid axis); repeatable")
    p.add_argument("--grid", dest="grids", action="append", default=[], metavar="KEY=V1,V2",
                   help="add or replace a grid axis; repeatable")
    p.add_argument("--num-samples", type=int, default=None,
                   help="grid: seeds per point (run.seed, run.seed+1, ...); optuna: number of trials (default 10)")
    p.add_argument("--max-concurrent", type=int, default=2, help="trials running at once (default 2)")
    p.add_argument("--max-failures", type=int, default=0,
                   help="retries of a failed trial from its last checkpoint (e.g. preempted nodes; default 0)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="DDP workers per trial (default 1: no DDP)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per worker (default: 1 when the Ray cluster has GPUs, else 0)")
    p.add_argument("--metric", default=None, help=f"metric to rank trials by, one of {', '.join(METRICS)}")
    p.add_argument("--mode", default=None, help="max or min (default: the space's)")
    p.add_argument("--optuna-seed", type=int, default=0, help="seed of the Optuna sampler")
    p.add_argument("--name", default="", help="sweep name (default SPACE-SEARCH-TIMESTAMP)")
    p.add_argument("--storage", default="sparsesweep-runs",
                   help="directory (or s3://... URI) for Tune results and checkpoints (default ./sparsesweep-runs)")
    p.add_argument("--tracking-uri", default="",
                   help="MLflow tracking URI (default sqlite:///STORAGE/mlflow.db; http://host:5000 for a server)")
    p.add_argument("--experiment", default="", help="MLflow experiment name (default sparsesweep-SPACE)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="NAME",
                   help="resume an interrupted sweep (default: the latest in --storage)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all cores)")
    p.add_argument("--dry-run", action="store_true", help="print the trials and exit without starting Ray")
    return p


# ----- parsing and validation ------------------------------------------------------------------

def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=0.2")
        out[key.strip()] = value
    return out


def _parse_grids(items: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. --grid method.prune_rate=0.2,0.5")
        out[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    return out


def _is_uri(path: str) -> bool:
    return "://" in path


def _storage_root(storage: str) -> str:
    return storage if _is_uri(storage) else str(Path(storage).expanduser().resolve())


def _tune_root(storage: str) -> str:
    return f"{storage.rstrip('/')}/tune" if _is_uri(storage) else str(Path(storage) / "tune")


def _check_tracking_uri(uri: str) -> None:
    allowed = ("sqlite:///", "http://", "https://", "postgresql://", "mysql://", "mssql://", "databricks")
    if not uri.startswith(allowed):
        raise ConfigError(f"--tracking-uri: {uri!r} is not supported; use one of sqlite:///PATH, "
                          f"http(s)://HOST:PORT, postgresql://, mysql:// (MLflow 3 has no ./mlruns file store)")
    if uri.startswith("sqlite:///"):
        _check_writable(Path(uri.removeprefix("sqlite:///")).parent, "--tracking-uri")


def _check_writable(path: Path, flag: str) -> None:
    """The nearest existing ancestor must be a writable directory (nothing is created here)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: cannot write under {path} ({probe} is not a writable directory)")


def check_tracking_server(uri: str, timeout_s: float = 10.0) -> None:
    """An http(s) tracking URI must answer MLflow's /health before any trial starts."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as reply:
            if reply.status == 200:
                return
    except OSError as e:
        raise ConfigError(f"--tracking-uri: no MLflow server answers at {uri} ({e})") from None
    raise ConfigError(f"--tracking-uri: {uri}/health did not answer 200")


def settings_from_args(args: argparse.Namespace) -> Settings:
    storage = _storage_root(args.storage)
    if args.resume is not None:
        return _resume_settings(args, storage)
    if args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent: {args.max_concurrent} must be >= 1")
    if args.max_failures < 0:
        raise ConfigError(f"--max-failures: {args.max_failures} must be >= 0")
    if args.workers_per_trial < 1:
        raise ConfigError(f"--workers-per-trial: {args.workers_per_trial} must be >= 1")
    if args.workers_per_trial > 1 and args.gpus_per_worker is not None and 0 < args.gpus_per_worker < 1:
        raise ConfigError(f"--gpus-per-worker: {args.gpus_per_worker:g} is a GPU share; DDP workers "
                          f"(--workers-per-trial > 1) need whole GPUs (NCCL ranks cannot share one)")
    if args.cpus_per_worker <= 0:
        raise ConfigError(f"--cpus-per-worker: {args.cpus_per_worker} must be > 0")
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker: {args.gpus_per_worker} must be >= 0")
    if args.metric is not None and args.metric not in METRICS:
        raise ConfigError(f"--metric: {args.metric!r} is not one of {', '.join(METRICS)}")
    if args.mode is not None and args.mode not in ("max", "min"):
        raise ConfigError(f"--mode: {args.mode!r} is not one of max, min")
    space = get_space(args.space)
    name = args.name or f"{space.name}-{args.search}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name.startswith("."):
        raise ConfigError(f"--name: {name!r} must be a plain name (no '/', not starting with '.')")
    if not _is_uri(storage) and (Path(_tune_root(storage)) / name).exists():
        raise ConfigError(f"--name: a sweep {name!r} already exists in {_tune_root(storage)}; "
                          f"pick another name or --resume {name}")
    if not _is_uri(storage):
        _check_writable(Path(storage), "--storage")
    tracking = args.tracking_uri or _default_tracking(storage)
    _check_tracking_uri(tracking)
    return Settings(space=space.name, search=args.search, sets=_parse_sets(args.sets),
                    grids=_parse_grids(args.grids), num_samples=args.num_samples,
                    max_concurrent=args.max_concurrent, max_failures=args.max_failures,
                    workers_per_trial=args.workers_per_trial,
                    cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                    metric=args.metric, mode=args.mode, optuna_seed=args.optuna_seed, name=name,
                    storage=storage, tracking_uri=tracking,
                    experiment=args.experiment or f"sparsesweep-{space.name}")


def _default_tracking(storage: str) -> str:
    if _is_uri(storage):
        raise ConfigError("--tracking-uri: required when --storage is a URI (e.g. http://HEAD:5000)")
    from orchestrator.tracking import default_tracking_uri

    return default_tracking_uri(Path(storage))


# Flags that may accompany --resume; every other flag defines the sweep and is saved with it.
RESUME_FLAGS = ("storage", "resume", "address", "num_cpus", "dry_run", "list_spaces", "list_keys")


def _resume_settings(args: argparse.Namespace, storage: str) -> Settings:
    defaults = vars(build_parser().parse_args([]))
    given = ["--" + k.replace("_", "-") for k, v in vars(args).items()
             if k not in RESUME_FLAGS and v != defaults[k]]
    if given:
        raise ConfigError(f"--resume: {', '.join(given)} cannot change a sweep being resumed; drop them")
    root = Path(_tune_root(storage))
    if _is_uri(storage):
        raise ConfigError("--resume: give a local --storage (remote sweeps resume with Tuner.restore)")
    if args.resume:
        sweep_dir = root / args.resume
    else:
        found = sorted(root.glob(f"*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"--resume: no sweep to resume in {root}")
        sweep_dir = found[-1].parent
    state = sweep_dir / STATE_FILE
    if not state.is_file():
        raise ConfigError(f"--resume: {sweep_dir} is not a sparsesweep sweep (no {STATE_FILE}); "
                          f"existing: {', '.join(p.parent.name for p in root.glob(f'*/{STATE_FILE}')) or 'none'}")
    settings = Settings(**json.loads(state.read_text()))
    settings.storage = storage
    return settings


def build_plan(settings: Settings) -> Plan:
    space = get_space(settings.space)
    num = settings.num_samples if settings.num_samples is not None else (10 if settings.search == "optuna" else 1)
    plan = make_plan(space, search=settings.search, sets=settings.sets, grid_overrides=settings.grids,
                     num_samples=num)
    configs = plan.trial_configs()
    for cfg in configs:
        if cfg.data.batch_size % settings.workers_per_trial:
            raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is not divisible by "
                              f"--workers-per-trial {settings.workers_per_trial}")
    for data_cfg in {c.data for c in configs}:
        check_available(data_cfg)
    checked: set[tuple] = set()
    for cfg in configs:  # a weights file of another architecture fails here, not in a trial
        path = getattr(cfg.method, "pretrained_path", "")
        if path and (key := (cfg.model, cfg.data.dataset, cfg.data.resize, path)) not in checked:
            from trainables.models.pretrained import check_pretrained

            check_pretrained(cfg, path)
            checked.add(key)
    return plan


# ----- output ------------------------------------------------------------------------------

def print_spaces() -> None:
    rows = [(s.name, s.grid_size(), "yes" if s.optuna else "no", s.description) for s in REGISTRY.values()]
    width = max(len(r[0]) for r in rows)
    print(f"{'space':<{width}}  grid  optuna  description")
    for name, n, opt, desc in rows:
        print(f"{name:<{width}}  {n:>4}  {opt:<6}  {desc}")


def print_keys() -> None:
    for key, default, helptext in describe_keys():
        print(f"{key:<28} {default!s:<20} {helptext}")


def describe_plan(plan: Plan) -> str:
    lines = [f"space {plan.space.name} ({plan.space.paper or plan.space.description}), search {plan.search}"]
    lines.append("base: " + " ".join(f"{k}={v}" for k, v in plan.base.items()))
    if plan.search == "grid":
        points = plan.points()
        lines.append(f"{len(points)} trials:")
        for i, point in enumerate(points):
            cfg = plan.resolve(point)
            varying = {k: v for k, v in point.items() if k not in plan.base}
            lines.append(f"  [{i:3d}] {cfg.hash()}  " + " ".join(f"{k}={v}" for k, v in varying.items()))
    else:
        lines.append(f"{plan.num_samples} Optuna trials over:")
        for key, dist in plan.optuna_space.items():
            lines.append(f"  {key}: {dist}")
    return "\n".join(lines)


# ----- running ------------------------------------------------------------------------------

def _write_state(sweep_dir: Path, settings: Settings) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = sweep_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(settings), indent=2))
    os.replace(tmp, sweep_dir / STATE_FILE)


def run(settings: Settings, plan: Plan, *, resume: bool, num_cpus: int | None, address: str | None) -> int:
    # Tune warns about experiment snapshots forced by CheckpointConfig(num_to_keep); they are
    # cheap here and the warning repeats every few seconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune

    from orchestrator.resources import check_address, check_resources, trial_resources
    from orchestrator.results import results_table, show_results
    from orchestrator.tracking import MLflowTrialCallback, SweepTracker, tracking_ui_command
    from trainables.tune import Runtime, trial

    space = plan.space
    metric = settings.metric or space.metric
    mode = settings.mode or space.mode
    tune_root = _tune_root(settings.storage)
    sweep_path = f"{tune_root}/{settings.name}"
    check_tracking_server(settings.tracking_uri)

    check_address(address)

    ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
             log_to_driver=True, configure_logging=True, logging_level="WARNING")
    try:
        gpus = check_resources(settings, plan, ray.cluster_resources(), remote=address is not None)
    except ConfigError:
        ray.shutdown()
        raise

    tracker = SweepTracker(settings.tracking_uri, settings.experiment, Path(settings.storage))
    parent = tracker.start(settings.name, params={"space": space.name, "search": plan.search,
                                                  **{f"set.{k}": v for k, v in settings.sets.items()},
                                                  "grid_trials": len(plan.points()) if plan.search == "grid" else 0,
                                                  "num_samples": plan.num_samples,
                                                  "workers_per_trial": settings.workers_per_trial},
                           tags={"sparsesweep.space": space.name}, resume_run_id=settings.parent_run_id)
    settings.parent_run_id = parent
    if not _is_uri(settings.storage):
        _write_state(Path(sweep_path), settings)

    runtime = Runtime(workers=settings.workers_per_trial, use_gpu=gpus > 0,
                      cpus_per_worker=settings.cpus_per_worker, gpus_per_worker=gpus,
                      ddp_storage=f"{sweep_path}/ddp")
    trainable = tune.with_resources(tune.with_parameters(trial, variants=plan.variants, runtime=runtime),
                                    trial_resources(settings, gpus))
    status = "FAILED"
    try:
        if resume:  # Tune restores its RunConfig, our (picklable) MLflow callback included
            tuner = tune.Tuner.restore(sweep_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            callback = MLflowTrialCallback(
                settings.tracking_uri, tracker.experiment_id, parent,
                resolve_params=lambda c: plan.resolve(c).to_flat())
            tuner = tune.Tuner(trainable, param_space=_param_space(plan),
                               tune_config=_tune_config(plan, settings, metric, mode),
                               run_config=tune.RunConfig(
                                   name=settings.name, storage_path=tune_root, callbacks=[callback],
                                   checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                   failure_config=tune.FailureConfig(max_failures=settings.max_failures)))
        results = tuner.fit()  # returns early, state saved, when interrupted (Ctrl-C)
        df = results_table(results, plan, metric, mode)
        errors = int((df["status"] == "ERROR").sum()) if len(df) else 0
        incomplete = int((df["status"] == "INCOMPLETE").sum()) if len(df) else 0
        status = "KILLED" if incomplete else ("FINISHED" if errors == 0 else "FAILED")
        out_dir = None if _is_uri(settings.storage) else Path(sweep_path)
        for path in show_results(df, results, plan, metric, mode, out_dir):
            tracker.log_artifact(path, "")
        print(f"\nMLflow: {tracking_ui_command(settings.tracking_uri)}")
        print(f"Tune results and checkpoints: {sweep_path}")
        if incomplete:
            print(f"\n{incomplete} trial(s) did not finish; continue the sweep with:\n  python -m "
                  f"orchestrator.sweep --storage {settings.storage} --resume {settings.name}", file=sys.stderr)
            return 130
        return 0 if errors == 0 else 1
    finally:
        tracker.finish(status)
        ray.shutdown()


def _param_space(plan: Plan) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = dict(plan.base)
    if plan.search == "grid":
        space.update({k: tune.grid_search(list(v)) for k, v in plan.grid.items()})
        if plan.variants:
            space["variant"] = tune.grid_search(list(plan.variants))
    return space


def _tune_config(plan: Plan, settings: Settings, metric: str, mode: str) -> Any:
    from ray import tune

    search_alg = None
    if plan.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(space=dict(plan.optuna_space), metric=metric, mode=mode,
                                  sampler=optuna.samplers.TPESampler(seed=settings.optuna_seed))
    return tune.TuneConfig(metric=metric, mode=mode, search_alg=search_alg, num_samples=plan.num_samples,
                          max_concurrent_trials=settings.max_concurrent)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_spaces:
        print_spaces()
        return 0
    if args.list_keys:
        print_keys()
        return 0
    try:
        settings = settings_from_args(args)
        plan = build_plan(settings)
        if args.num_cpus is not None and args.num_cpus < 1:
            raise ConfigError(f"--num-cpus: {args.num_cpus} must be >= 1")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe_plan(plan))
        return 0
    try:
        return run(settings, plan, resume=args.resume is not None, num_cpus=args.num_cpus, address=args.address)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
