"""`python -m orchestrator.sweep`: parse, validate, plan; `orchestrator.driver` runs the sweep.

Everything a user can get wrong is checked before Ray starts or an MLflow run is created:
a bad key, value, space, path or resource request ends with one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from orchestrator.checks import SEED_MAX, Number, argparse_type, check_name, check_storage, one_line
from orchestrator.driver import ExitCode
from orchestrator.settings import STATE_FILE, Settings, SweepLayout, is_uri, storage_root, tune_root
from orchestrator.tracking.uris import check_tracking_uri, default_tracking_uri, refuse_password
from trainables.config import ConfigError, describe_keys

if TYPE_CHECKING:  # search_spaces imports Optuna: not needed by --help
    from search_spaces import Plan

METRICS = ("test_acc", "test_loss", "train_acc", "train_loss", "dying_ratio", "k_minus_dying")
GRID_SEEDS_MAX = 100  # --num-samples with --search grid: seeds per point (each point resolved up front)

# Every numeric flag and its range (--gpus-per-worker: cluster.resources.GPUS, --address's port:
# cluster.resources.PORT); argparse reads them through Number.parse only.
NUMBERS: dict[str, Number] = {
    "--num-samples": Number(True, 1, 10_000, why="trials; with --search grid, seeds per point, "
                                                 f"at most {GRID_SEEDS_MAX}"),
    "--max-concurrent": Number(True, 1, 10_000),
    "--max-failures": Number(True, 0, 1000),
    "--workers-per-trial": Number(True, 1, 1024),
    "--cpus-per-worker": Number(False, 0, 1024, lo_open=True),
    "--optuna-seed": Number(True, 0, SEED_MAX, why="the seed range of numpy and Optuna's samplers"),
    "--grace-period": Number(True, 1, 1_000_000, why="epochs (cycles)"),
    "--reduction-factor": Number(False, 1, 1_000_000, lo_open=True),
    "--num-cpus": Number(True, 1, 65_536),
}


def _num(flag: str) -> dict:
    return {"type": argparse_type(flag, NUMBERS[flag])}


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a flag without its value, an unknown flag) as one line, exit 2,
    like every other bad input, instead of the usage text."""

    def error(self, message: str) -> NoReturn:
        hint = ("; a value starting with '-' is written with '=' (--max-failures=-1, --set=KEY=VALUE)"
                if "expected one argument" in message else "")
        # "argument --num-samples: 'nan' is not finite..." -> "--num-samples: 'nan' is not finite..."
        message = message.removeprefix("argument ")
        self.exit(2, f"error: {one_line(message)}{hint} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m orchestrator.sweep",
        description="Run a named search space of sparse-training experiments as Ray Tune trials, "
                    "tracked in MLflow.")
    p.add_argument("--list-spaces", action="store_true", help="list the named search spaces and exit")
    p.add_argument("--list-keys", action="store_true", help="list every config key with its default and exit")
    p.add_argument("--space", default=None,
                   help="named search space (default tour; see --list-spaces) or a space file "
                        "(.yaml/.toml, the fields of a named space)")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                   help="import a plugin module that is not installed (installed plugins load "
                        "by their entry point); repeatable")
    p.add_argument("--variants", default=None, metavar="A,B",
                   help="run only these named variants of the space (e.g. --variants ep,soft_lr; "
                        "--list-spaces shows a space's variants in its description, --dry-run lists them)")
    p.add_argument("--search", default="grid", help="grid (the paper's ablation) or optuna")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every trial (pins a grid axis); repeatable")
    p.add_argument("--grid", dest="grids", action="append", default=[], metavar="KEY=V1,V2",
                   help="add or replace a grid axis; repeatable")
    p.add_argument("--num-samples", **_num("--num-samples"), default=None,
                   help="grid: seeds per point (run.seed, run.seed+1, ...); optuna: number of trials (default 10)")
    p.add_argument("--max-concurrent", **_num("--max-concurrent"), default=2, help="trials running at once (default 2)")
    p.add_argument("--max-failures", **_num("--max-failures"), default=0,
                   help="retries of a failed trial from its last checkpoint (e.g. preempted nodes; default 0)")
    p.add_argument("--workers-per-trial", **_num("--workers-per-trial"), default=1, help="DDP workers per trial (default 1: no DDP)")
    p.add_argument("--cpus-per-worker", **_num("--cpus-per-worker"), default=1.0, help="CPUs reserved per worker (default 1)")
    p.add_argument("--gpus-per-worker", default=None, metavar="N|auto",
                   help="GPUs per worker: a share such as 0.25, or auto (a share per trial from its "
                        "model's size: 2-8 small trials per GPU); default 1 when the Ray cluster has "
                        "GPUs, else 0")
    p.add_argument("--metric", default=None, help=f"metric to rank trials by, one of {', '.join(METRICS)}")
    p.add_argument("--mode", default=None, help="max or min (default: the space's)")
    p.add_argument("--optuna-seed", **_num("--optuna-seed"), default=0, help="seed of the Optuna sampler")
    p.add_argument("--sampler", default=None, help="Optuna sampler: tpe (default), gp, random or cmaes")
    p.add_argument("--optuna-storage", default="", metavar="URL",
                   help="RDB of the Optuna study, e.g. postgresql://HOST/DB (default: SQLite in the "
                        "sweep's directory; --resume continues the same study)")
    p.add_argument("--study", default="", metavar="NAME",
                   help="Optuna study in --optuna-storage to create or join: drivers on several "
                        "machines giving the same NAME share its trials (default: the sweep's own)")
    p.add_argument("--join-study", action="store_true",
                   help="with --study: the study must exist already (a driver joining a lab's study)")
    p.add_argument("--scheduler", default="fifo",
                   help="fifo (every trial runs to the end) or asha (early stopping; in cycles for "
                        "iterative methods)")
    p.add_argument("--grace-period", **_num("--grace-period"), default=None, metavar="N",
                   help="ASHA: epochs (cycles) every trial trains before it can be stopped (default 1)")
    p.add_argument("--reduction-factor", **_num("--reduction-factor"), default=None, metavar="R",
                   help="ASHA: keep the top 1/R of the trials at each rung (default 4)")
    p.add_argument("--name", default="", help="sweep name (default SPACE-SEARCH-TIMESTAMP)")
    p.add_argument("--storage", default="sparsesweep-runs",
                   help="directory (or s3://... URI) for Tune results and checkpoints (default ./sparsesweep-runs)")
    p.add_argument("--tracking-uri", default="",
                   help="MLflow tracking URI (default sqlite:///STORAGE/mlflow.db; http://host:5000 for a server)")
    p.add_argument("--experiment", default="", help="MLflow experiment name (default sparsesweep-SPACE)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="NAME",
                   help="resume an interrupted sweep (default: the latest in --storage)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--num-cpus", **_num("--num-cpus"), default=None, help="CPUs of the local Ray (default: all cores)")
    p.add_argument("--dry-run", action="store_true", help="print the trials and exit without starting Ray")
    p.add_argument("--sync-mlflow", action="store_true",
                   help="with --resume NAME: replay what MLflow missed (server down) from the sweep's "
                        "spool and Tune's results, then exit; starts no trial")
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


def settings_from_args(args: argparse.Namespace) -> Settings:
    storage = storage_root(check_storage("--storage", args.storage))
    if args.resume is not None:
        return _resume_settings(args, storage)
    if args.search == "grid" and args.num_samples is not None and args.num_samples > GRID_SEEDS_MAX:
        raise ConfigError(f"--num-samples: {args.num_samples} seeds per grid point is out of range; allowed "
                          f"with --search grid: an integer in [1, {GRID_SEEDS_MAX}]")
    from orchestrator.cluster.resources import parse_gpus

    gpus = parse_gpus(args.gpus_per_worker)
    if args.workers_per_trial > 1 and isinstance(gpus, float) and 0 < gpus < 1:
        raise ConfigError(f"--gpus-per-worker: {gpus:g} is a GPU share; DDP workers "
                          f"(--workers-per-trial > 1) need whole GPUs (NCCL ranks cannot share one)")
    scheduler, grace, reduction = _scheduler_args(args)
    sampler, optuna_storage = _study_args(args)
    from orchestrator.cluster.shared_db import check_study

    if args.study:
        check_name("--study", args.study)
    check_study(optuna_storage, args.study, join=args.join_study)
    if args.metric is not None and args.metric not in METRICS:
        raise ConfigError(f"--metric: {args.metric!r} is not one of {', '.join(METRICS)}")
    if args.mode is not None and args.mode not in ("max", "min"):
        raise ConfigError(f"--mode: {args.mode!r} is not one of max, min")
    from search_spaces import DEFAULT_SPACE, load_space

    space, space_file = load_space(args.space or DEFAULT_SPACE)
    name = check_name("--name", args.name or f"{space.name}-{args.search}-{time.strftime('%Y%m%d-%H%M%S')}")
    experiment = check_name("--experiment", args.experiment or f"sparsesweep-{space.name}")
    if not is_uri(storage) and SweepLayout(storage, name).sweep_dir.exists():
        raise ConfigError(f"--name: a sweep {name!r} already exists in {tune_root(storage)}; "
                          f"pick another name or --resume {name}")
    tracking = args.tracking_uri or _default_tracking(storage)
    check_tracking_uri(tracking)
    return Settings(space=space.name, space_file=space_file, plugins=list(args.plugins),
                    search=args.search, sets=_parse_sets(args.sets),
                    grids=_parse_grids(args.grids), num_samples=args.num_samples,
                    max_concurrent=args.max_concurrent, max_failures=args.max_failures,
                    workers_per_trial=args.workers_per_trial,
                    cpus_per_worker=args.cpus_per_worker, gpus_per_worker=gpus,
                    metric=args.metric, mode=args.mode, optuna_seed=args.optuna_seed, name=name,
                    storage=storage, tracking_uri=tracking,
                    experiment=experiment,
                    scheduler=scheduler, grace_period=grace, reduction_factor=reduction,
                    sampler=sampler, optuna_storage=optuna_storage, study=args.study,
                    variants=[v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else [])


def _scheduler_args(args: argparse.Namespace) -> tuple[str, int | None, float | None]:
    """--scheduler, --grace-period, --reduction-factor, typed (checked against the plan later)."""
    from orchestrator.tuner.schedulers import SCHEDULERS

    if args.scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler: {args.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    return args.scheduler, args.grace_period, args.reduction_factor


def _study_args(args: argparse.Namespace) -> tuple[str, str]:
    """--sampler and --optuna-storage: Optuna's, so only with --search optuna."""
    from orchestrator.tuner.study import check_sampler, check_storage_url

    for flag, value in (("--sampler", args.sampler), ("--optuna-storage", args.optuna_storage),
                        ("--study", args.study)):
        if value and args.search != "optuna":
            raise ConfigError(f"{flag}: applies to --search optuna only")
    sampler = check_sampler(args.sampler) if args.sampler is not None else "tpe"
    if not args.optuna_storage:
        return sampler, ""
    from orchestrator.cluster.shared_db import check_server_uri

    url = check_storage_url(args.optuna_storage)
    refuse_password(url, "--optuna-storage", "PGPASSWORD or ~/.pgpass (the database's own password file)")
    check_server_uri(url, "--optuna-storage")  # the database server answers
    return sampler, url


def _default_tracking(storage: str) -> str:
    if is_uri(storage):
        raise ConfigError("--tracking-uri: required when --storage is a URI (e.g. http://HEAD:5000)")
    return default_tracking_uri(storage)


# Flags that may accompany --resume; every other flag defines the sweep and is saved with it.
RESUME_FLAGS = ("storage", "resume", "address", "num_cpus", "dry_run", "list_spaces", "list_keys",
                "sync_mlflow")


def _resume_settings(args: argparse.Namespace, storage: str) -> Settings:
    defaults = vars(build_parser().parse_args([]))
    given = ["--" + k.replace("_", "-") for k, v in vars(args).items()
             if k not in RESUME_FLAGS and v != defaults[k]]
    if given:
        raise ConfigError(f"--resume: {', '.join(given)} cannot change a sweep being resumed; drop them")
    if is_uri(storage):
        raise ConfigError("--resume: give a local --storage (remote sweeps resume with Tuner.restore)")
    saved = SweepLayout.saved_sweeps(storage)
    if args.resume:
        layout = SweepLayout(storage, check_name("--resume", args.resume))
    elif saved:
        layout = saved[-1]
    else:
        raise ConfigError(f"--resume: no sweep to resume in {tune_root(storage)}")
    if not layout.state_file.is_file():
        raise ConfigError(f"--resume: {layout.sweep_dir} is not a sparsesweep sweep (no {STATE_FILE}); "
                          f"existing: {', '.join(s.name for s in saved) or 'none'}")
    return layout.read_settings()


# The config's complaint about a dataset read from a directory nobody named, and the stand-in
# directory a dry run plans with instead (printed in the plan's base).
DATA_DIR_PROBLEM = "data.data_dir: dataset"
DRY_RUN_DATA_DIR = "<DATA_DIR>"


def build_plan(settings: Settings, missing_data: list[str] | None = None) -> Plan:
    """The validated plan. Missing data raises, or with `missing_data` (a dry run) is noted there."""
    from search_spaces import load_space, make_plan
    from trainables.data import check_available

    space, _ = load_space(settings.space_file or settings.space)
    num = settings.num_samples if settings.num_samples is not None else (10 if settings.search == "optuna" else 1)
    def plan_with(sets: dict[str, str]) -> Plan:
        return make_plan(space, search=settings.search, sets=sets, grid_overrides=settings.grids,
                         num_samples=num, variants=settings.variants)

    try:
        plan = plan_with(settings.sets)
    except ConfigError as e:
        # a dry run of a space whose data directory is not given still plans and costs it
        if missing_data is None or not str(e).startswith(DATA_DIR_PROBLEM):
            raise
        missing_data.append(str(e))
        plan = plan_with({**settings.sets, "data.data_dir": DRY_RUN_DATA_DIR})
    configs = plan.trial_configs()
    for cfg in configs:
        if cfg.data.batch_size % settings.workers_per_trial:
            raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is not divisible by "
                              f"--workers-per-trial {settings.workers_per_trial}")
    for data_cfg in {c.data for c in configs if c.data.data_dir != DRY_RUN_DATA_DIR}:
        try:
            check_available(data_cfg)
        except ConfigError as e:
            if missing_data is None:
                raise
            if str(e) not in missing_data:
                missing_data.append(str(e))
    from orchestrator.tuner.schedulers import check_asha_args

    check_asha_args(plan, settings.scheduler, settings.grace_period, settings.reduction_factor)
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
    from search_spaces import REGISTRY

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
    swept = [*plan.grid, *plan.optuna_space]  # a swept key's base value is only its default
    lines.append("base: " + " ".join(f"{k}={v}" for k, v in plan.base.items() if k not in swept))
    if plan.search == "grid":
        points = plan.points()
        lines.append(f"{len(points)} trials:")
        for i, point in enumerate(points):
            cfg = plan.resolve(point)
            varying = {k: point[k] for k in [*plan.grid, *(["variant"] if plan.variants else [])]}
            lines.append(f"  [{i:3d}] {cfg.hash()}  " + " ".join(f"{k}={v}" for k, v in varying.items()))
    else:
        lines.append(f"{plan.num_samples} Optuna trials over:")
        for key, dist in plan.optuna_space.items():
            lines.append(f"  {key}: {dist}")
    return "\n".join(lines)


def describe_cost(plan: Plan, settings: Settings) -> str:
    """GPU-hours (and CPU core-hours) of the plan, unpacked and packed (orchestrator.cluster.packing)."""
    from orchestrator.cluster.packing import describe_estimate, estimate

    if plan.search == "grid":
        configs = plan.trial_configs()
        note = ""
    else:
        configs = [plan.resolve(plan.base)] * plan.num_samples
        note = "Optuna trials costed at the space's base config"
    if settings.scheduler == "asha":
        note = "; ".join(filter(None, [note, "before ASHA's early stops"]))
    return describe_estimate(estimate(configs, settings.workers_per_trial),
                             workers=settings.workers_per_trial, packing=note)


def _sync(args: argparse.Namespace, settings: Settings, plan: Plan) -> int:
    """--sync-mlflow: replay what MLflow missed (orchestrator.tracking.sync); nothing else runs."""
    from orchestrator.tracking.sync import sync_mlflow

    try:
        if args.resume is None:
            raise ConfigError("--sync-mlflow: name the sweep to sync with --resume NAME")
        from orchestrator.tracking.labels import SweepLabels

        return sync_mlflow(settings.tracking_uri, settings.experiment, settings.parent_run_id,
                           settings.layout.sweep_dir, settings.layout.spool_dir,
                           lambda c: plan.resolve(c).to_flat(),
                           labels=SweepLabels.from_plan(plan, settings.name))
    except ConfigError as e:
        return refuse(e)


def refuse(error: Exception) -> int:
    """Bad input: its one line on stderr (a newline in a value escaped), exit 2."""
    print(f"error: {one_line(str(error))}", file=sys.stderr)
    return ExitCode.BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or argparse's one-line refusal (2), already printed
        return e.code if isinstance(e.code, int) else 2
    from trainables.plugins import load_plugins

    try:  # installed plugins and --plugin modules, before anything reads a registry
        load_plugins(args.plugins)
    except ConfigError as e:
        return refuse(e)
    if args.list_spaces:
        print_spaces()
        return ExitCode.OK
    if args.list_keys:
        print_keys()
        return ExitCode.OK
    missing: list[str] = []
    try:
        settings = settings_from_args(args)
        load_plugins(settings.plugins)  # --resume: the sweep's own
        plan = build_plan(settings, missing if args.dry_run else None)
    except ConfigError as e:
        return refuse(e)
    if args.resume is None:  # the parent MLflow run's description (orchestrator.tracking.labels)
        from orchestrator.cluster.security import redact_command

        settings.command = redact_command(sys.argv[1:] if argv is None else argv)
    if args.sync_mlflow:
        return _sync(args, settings, plan)
    if args.dry_run:
        print(describe_plan(plan))
        print(describe_cost(plan, settings))
        for line in missing:  # a dry run plans without the data; the sweep itself stops here
            print(f"note: {line.removeprefix('data.data_dir: ')} (needed to run the sweep, not for --dry-run)")
        return ExitCode.OK
    try:
        address = args.address or os.environ.get("RAY_ADDRESS") or None  # None: a Ray of our own
        from orchestrator.driver import run

        return run(settings, plan, resume=args.resume is not None, num_cpus=args.num_cpus, address=address)
    except ConfigError as e:
        return refuse(e)
    except Exception as e:  # a full or unwritable storage: one line, and the sweep resumes later
        from orchestrator.recovery import storage_failure_message

        if (message := storage_failure_message(e, settings.storage, settings.name)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return ExitCode.STORAGE_FULL


if __name__ == "__main__":
    sys.exit(main())
