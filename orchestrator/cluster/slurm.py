"""`python -m orchestrator.cluster.slurm`: write (and optionally submit) a SLURM batch script
that starts Ray across the job's nodes and runs one sweep, resumed when the job is requeued.

The script is `deploy/slurm/sweep.sbatch` with its settings filled in: the `#SBATCH` lines
(nodes, GPUs per node, CPUs per task, time, partition, account, `--requeue`,
`--signal=B:USR1@N`), the sweep's arguments, its shared `--storage`, and where MLflow is.
A compute node cannot be reached by SSH on most clusters, so everything Ray needs starts
inside the job: `ray symmetric-run` (nodes held alone) or `ray start --head` plus
`srun ray start --address` (shared nodes), on ports derived from the job id.

Preemption and time limits: SLURM sends USR1 to the batch shell `--signal` seconds before the
limit; the script passes it to the driver (Ray Tune stops on USR1 and saves the sweep's state)
and requeues the job, which then runs `--resume NAME` on the same storage: finished trials are
kept, and the MLflow runs are reopened, not created again.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainables.config import ConfigError

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "slurm" / "sweep.sbatch"
RAY_MODES = ("manual", "symmetric")

# Ray's own defaults sit below (GCS 6379, client 10001, workers 10002-19999) and Linux's
# ephemeral ports above (32768-60999): each job takes one block of PORT_BLOCK ports in between.
PORT_LOW = 20000
PORT_BLOCK = 100
PORT_SLOTS = (32768 - PORT_LOW) // PORT_BLOCK
FIXED_PORTS = ("port", "node-manager-port", "object-manager-port",
               "dashboard-port", "dashboard-agent-grpc-port", "dashboard-agent-listen-port",
               "metrics-export-port", "runtime-env-agent-port")
FIRST_WORKER_PORT = 10  # offset in the block: worker processes use the rest of it
# Flags the script itself sets (per run of the job): the sweep's arguments must not.
OWNED_FLAGS = ("--storage", "--name", "--resume", "--address", "--tracking-uri", "--dry-run",
               "--list-spaces", "--list-keys", "--sync-mlflow")
# Node-local paths: a requeued job may start on another node and would not find the sweep.
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/scratch/local")
LOCAL_FS_TYPES = ("tmpfs", "ramfs", "devtmpfs", "overlay")


def job_ports(job_id: int) -> dict[str, int]:
    """The Ray ports of one job: block `job_id % PORT_SLOTS`, so jobs whose ids differ by less
    than PORT_SLOTS never share a port on a node."""
    base = PORT_LOW + (job_id % PORT_SLOTS) * PORT_BLOCK
    ports = {name: base + i for i, name in enumerate(FIXED_PORTS)}
    ports["min-worker-port"] = base + FIRST_WORKER_PORT
    ports["max-worker-port"] = base + PORT_BLOCK - 1
    return ports


def ports_shell(job_id: int) -> str:
    """`eval`-able lines for the batch script: GCS_PORT, and the other ports as `ray start` flags."""
    ports = job_ports(job_id)
    flags = " ".join(f"--{k}={v}" for k, v in ports.items() if k != "port")
    return f"GCS_PORT={ports['port']}\nRAY_PORT_ARGS={shlex.quote(flags)}\n"


@dataclass
class SlurmJob:
    """What the batch script needs: the `#SBATCH` settings, where things live, the sweep."""

    storage: str
    name: str
    sweep_args: list[str] = field(default_factory=list)
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 8
    time: str = "04:00:00"
    partition: str = ""
    account: str = ""
    signal_s: int = 120
    job_name: str = "sparsesweep"
    ray_mode: str = "manual"
    tracking_uri: str = ""
    python: str = sys.executable
    workdir: str = str(Path.cwd())
    exclusive: bool = False


def render(job: SlurmJob, template: Path = TEMPLATE) -> str:
    """The batch script: the template with every {{FIELD}} filled (shell values quoted)."""
    optional = [f"#SBATCH --gpus-per-node={job.gpus_per_node}" if job.gpus_per_node else "",
                f"#SBATCH --partition={job.partition}" if job.partition else "",
                f"#SBATCH --account={job.account}" if job.account else "",
                "#SBATCH --exclusive" if job.exclusive or job.ray_mode == "symmetric" else ""]
    fields = {
        "JOB_NAME": job.job_name, "NODES": str(job.nodes), "CPUS_PER_TASK": str(job.cpus_per_task),
        "TIME": job.time, "OPTIONAL_SBATCH": "\n".join(line for line in optional if line),
        "SIGNAL_S": str(job.signal_s), "OUTPUT": f"{job.storage}/slurm/%x-%j.out",
        "PYTHON": shlex.quote(job.python), "WORKDIR": shlex.quote(job.workdir),
        "STORAGE": shlex.quote(job.storage), "SWEEP_NAME": shlex.quote(job.name),
        "TRACKING_URI": shlex.quote(job.tracking_uri), "RAY_MODE": job.ray_mode,
        "GPUS_PER_NODE": str(job.gpus_per_node), "SWEEP_ARGS": shlex.join(job.sweep_args),
    }
    text = template.read_text()
    if not fields["OPTIONAL_SBATCH"]:
        text = text.replace("{{OPTIONAL_SBATCH}}\n", "")
    for key, value in fields.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise ValueError(f"{template}: unfilled field {text[text.index('{{'):].split('}}')[0]}}}}}")
    return text


# ----- validation -----------------------------------------------------------------------------

def check_shared_storage(storage: str, *, assume_shared: bool) -> str:
    """The absolute path of `storage`, refused when it is a URI or looks node-local."""
    if not storage:
        raise ConfigError("--storage: required; a directory on the cluster's shared file system "
                          "(e.g. /shared/$USER/sparsesweep-runs), where a requeued job finds its sweep")
    if "://" in storage:
        raise ConfigError(f"--storage: {storage!r} is a URI; a requeued SLURM job resumes from a "
                          f"directory on the shared file system (e.g. /shared/$USER/runs)")
    path = Path(storage).expanduser().resolve()
    if not assume_shared:
        fs = _fs_type(path)
        local = next((p for p in NODE_LOCAL if path == Path(p) or Path(p) in path.parents), None)
        if local or fs in LOCAL_FS_TYPES:
            where = f"under {local}" if local else f"on a {fs} file system"
            raise ConfigError(f"--storage: {path} is {where}, local to one node; give a directory "
                              f"on the shared file system (or --assume-shared on a one-node cluster)")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--storage: cannot write under {path} ({probe} is not a writable directory)")
    return str(path)


def _fs_type(path: Path) -> str:
    """The type of the file system holding `path` (/proc/self/mounts; "" where unknown)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return ""
    best, kind = "", ""
    for point, fs in mounts:
        point = point.replace("\\040", " ")
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, kind = point, fs
    return kind


def check_job(job: SlurmJob) -> list[str]:
    """Every setting of the job, and the sweep's arguments as the CLI will see them; returns
    warnings to print. Raises ConfigError (one line) on bad input."""
    for flag, value, low in (("--nodes", job.nodes, 1), ("--gpus-per-node", job.gpus_per_node, 0),
                             ("--cpus-per-task", job.cpus_per_task, 1), ("--signal-seconds", job.signal_s, 1)):
        if value < low:
            raise ConfigError(f"{flag}: {value} must be >= {low}")
    if job.ray_mode not in RAY_MODES:
        raise ConfigError(f"--ray-mode: {job.ray_mode!r} is not one of {', '.join(RAY_MODES)}")
    for flag, value in (("--time", job.time), ("--partition", job.partition),
                        ("--account", job.account), ("--job-name", job.job_name)):
        if any(c.isspace() for c in value) or any(c in value for c in "'\"$`\\;"):
            raise ConfigError(f"{flag}: {value!r} must be one word without quotes or shell characters")
    if not job.time:
        raise ConfigError("--time: required, e.g. 04:00:00 or 1-00:00:00")
    if not Path(job.python).is_file():
        raise ConfigError(f"--python: {job.python} is not a file (the venv's python on the nodes)")
    owned = [a.split("=", 1)[0] for a in job.sweep_args if a.split("=", 1)[0] in OWNED_FLAGS]
    if owned:
        raise ConfigError(f"sweep arguments: {', '.join(owned)} are set by the job script; give "
                          f"--storage/--name/--tracking-uri to the writer, and drop the others")
    from orchestrator.tracking.uris import check_tracking_server

    warnings = []
    if not job.tracking_uri:
        job.tracking_uri = f"sqlite:///{job.storage}/mlflow.db"
    if job.tracking_uri.startswith("sqlite:///"):
        warnings.append(f"warning: MLflow in SQLite on the shared file system ({job.tracking_uri}): "
                        f"one sweep's driver writes it, which works; several sweeps writing one "
                        f"file at once can lock it, and NFS locking is unreliable: prefer an "
                        f"MLflow server (--tracking-uri http://HOST:PORT)")
    check_tracking_server(job.tracking_uri)  # a server the login node cannot reach: refused now
    sweep_dir = Path(job.storage) / "tune" / job.name
    if (sweep_dir / "sparsesweep.json").is_file():
        warnings.append(f"note: sweep {job.name} exists in {job.storage}: the job resumes it "
                        f"(the sweep arguments given here are not used)")
    else:
        _check_sweep_args(job)
    return warnings


def _check_sweep_args(job: SlurmJob) -> None:
    """The sweep's arguments through the CLI's own parsing and validation (a dry run's)."""
    from orchestrator.sweep import build_parser, build_plan, settings_from_args

    argv = [*job.sweep_args, "--storage", job.storage, "--name", job.name,
            "--tracking-uri", job.tracking_uri]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # argparse printed its one line already
        raise ConfigError(f"sweep arguments: {shlex.join(job.sweep_args)} are not accepted by "
                          f"python -m orchestrator.sweep") from None
    build_plan(settings_from_args(args), missing_data=[])  # data may exist on the cluster only


# ----- command line -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from orchestrator.sweep import OneLineParser

    p = OneLineParser(prog="python -m orchestrator.cluster.slurm",
                      description="Write (and submit) a SLURM batch script running one sweep on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the batch script; --submit also runs sbatch on it",
                       description="Write the batch script. Sweep arguments follow `--`.")
    w.add_argument("--out", default="sweep.sbatch", help="the script to write (default sweep.sbatch)")
    w.add_argument("--storage", default="", help="the sweep's directory on the shared file system (required)")
    w.add_argument("--name", default="", help="the sweep's name: fixed, so a requeued job resumes it (required)")
    w.add_argument("--tracking-uri", default="",
                   help="MLflow server, http://HOST:PORT (default: SQLite in --storage, with a warning)")
    w.add_argument("--nodes", type=int, default=1)
    w.add_argument("--gpus-per-node", type=int, default=0)
    w.add_argument("--cpus-per-task", type=int, default=8, help="CPUs per node given to Ray (default 8)")
    w.add_argument("--time", default="04:00:00", help="time limit (default 04:00:00)")
    w.add_argument("--partition", default="")
    w.add_argument("--account", default="")
    w.add_argument("--signal-seconds", type=int, default=120,
                   help="USR1 this many seconds before the time limit: the sweep saves and requeues (default 120)")
    w.add_argument("--job-name", default="sparsesweep")
    w.add_argument("--ray-mode", default="manual",
                   help="manual (ray start on each node; shared nodes) or symmetric (ray symmetric-run; "
                        "adds --exclusive)")
    w.add_argument("--exclusive", action="store_true", help="ask for whole nodes")
    w.add_argument("--python", default=sys.executable, help="python of the venv on the nodes (default: this one)")
    w.add_argument("--workdir", default=str(Path.cwd()), help="the sparsesweep checkout (default: here)")
    w.add_argument("--assume-shared", action="store_true",
                   help="accept a --storage that looks node-local (a one-node cluster)")
    w.add_argument("--submit", action="store_true", help="run sbatch on the written script")
    w.add_argument("sweep_args", nargs=argparse.REMAINDER,
                   help="-- then the arguments of python -m orchestrator.sweep")
    ports = sub.add_parser("ports", help="print the job's Ray ports as shell assignments")
    ports.add_argument("job_id", type=int)
    return p


def job_from_args(args: argparse.Namespace) -> SlurmJob:
    storage = check_shared_storage(args.storage, assume_shared=args.assume_shared)
    if not args.name or "/" in args.name or args.name.startswith("."):
        raise ConfigError(f"--name: {args.name!r}: required, a plain name (the requeued job resumes it)")
    sweep_args = list(args.sweep_args)
    if sweep_args[:1] == ["--"]:
        sweep_args = sweep_args[1:]
    return SlurmJob(storage=storage, name=args.name, sweep_args=sweep_args, nodes=args.nodes,
                    gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                    time=args.time, partition=args.partition, account=args.account,
                    signal_s=args.signal_seconds, job_name=args.job_name, ray_mode=args.ray_mode,
                    tracking_uri=args.tracking_uri, python=str(Path(args.python).absolute()),
                    workdir=str(Path(args.workdir).resolve()), exclusive=args.exclusive)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "ports":
        print(ports_shell(args.job_id), end="")
        return 0
    try:
        job = job_from_args(args)
        warnings = check_job(job)
        if args.submit and not _which("sbatch"):
            raise ConfigError("--submit: sbatch is not on PATH (write the script, submit it on the login node)")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in warnings:
        print(line, file=sys.stderr)
    out = Path(args.out)
    out.write_text(render(job))
    out.chmod(0o755)
    (Path(job.storage) / "slurm").mkdir(parents=True, exist_ok=True)  # --output's directory
    print(f"wrote {out}")
    if not args.submit:
        print(f"submit with: sbatch {shlex.quote(str(out))}")
        return 0
    done = subprocess.run(["sbatch", "--parsable", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"error: sbatch: {done.stderr.strip()}", file=sys.stderr)
        return done.returncode
    job_id = done.stdout.strip().split(";")[0]
    print(f"submitted job {job_id}; log: {job.storage}/slurm/{job.job_name}-{job_id}.out")
    return 0


def _which(exe: str) -> str | None:
    import shutil

    return shutil.which(exe)


if __name__ == "__main__":
    sys.exit(main())
