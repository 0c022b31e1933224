"""What a sweep asks of the Ray cluster, checked before any trial starts.

A local Ray cannot grow, so a trial larger than it is refused with one line; a remote
cluster may autoscale, so the same mismatch is only a note there.

`--gpus-per-worker auto` packs trials onto GPUs: each trial reserves the share that
`orchestrator.cluster.packing` picks for its model (1/8 .. 1), through a per-trial resource request.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from orchestrator.checks import Number, one_line
from orchestrator.cluster.packing import AUTO, gpu_share
from trainables.config import ConfigError

if TYPE_CHECKING:
    from orchestrator.settings import Settings
    from search_spaces import Plan

Gpus = float | str  # a share per worker, or AUTO
# Ray takes a share of one GPU (0..1) or whole GPUs; more than 64 per worker is no machine.
GPUS = Number(False, 0, 64, why="a share such as 0.25, or whole GPUs; or auto")
PORT = Number(True, 1, 65535, why="a TCP port")


def parse_gpus(value: str | None) -> float | str | None:
    """--gpus-per-worker: None (decide from the cluster), 'auto' or a number >= 0."""
    if value is None:
        return None
    if value.strip().lower() == AUTO:
        return AUTO
    gpus = float(GPUS.parse("--gpus-per-worker", value))
    if gpus > 1 and not gpus.is_integer():
        raise ConfigError(f"--gpus-per-worker: {gpus:g} is more than one GPU but not a whole number; "
                          f"allowed: a share in [0, 1] or whole GPUs (Ray cannot reserve {gpus:g})")
    return gpus


def trial_resources(settings: Settings, gpus: Gpus, plan: Plan | None = None) -> Any:
    """What Tune reserves for one trial: a dict, or (auto) a function of the trial's config."""
    if settings.workers_per_trial > 1:
        return {"cpu": 0.01}  # the trial only waits on its TorchTrainer, whose workers reserve the rest
    if gpus != AUTO:
        return {"cpu": settings.cpus_per_worker, "gpu": gpus}
    if plan is None:
        raise ValueError("gpus=auto needs the plan to size each trial")
    from ray.tune import PlacementGroupFactory

    cpus = settings.cpus_per_worker

    def per_trial(config: dict) -> PlacementGroupFactory:
        return PlacementGroupFactory([{"CPU": cpus, "GPU": gpu_share(plan.resolve(config))}])

    return per_trial


def worker_gpus(gpus: Gpus) -> float:
    """GPUs each DDP worker reserves (auto: whole GPUs, NCCL ranks cannot share one)."""
    return 1.0 if gpus == AUTO else float(gpus)


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """A HOST:PORT Ray address must accept a connection (ray.init would retry for minutes)."""
    if address is None or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address: {one_line(repr(address))} is not auto, HOST:PORT or ray://HOST:PORT")
    number = PORT.parse("--address", port)
    import socket

    try:
        socket.create_connection((host.strip("[]"), number), timeout=timeout_s).close()
    except (OSError, ValueError) as e:  # UnicodeError: a host name no DNS label can hold
        raise ConfigError(f"--address: no Ray cluster answers at {one_line(hostport)} ({one_line(str(e))})") from None


TOKEN_HINT = ("the Ray cluster at {address} requires token authentication: export RAY_AUTH_MODE=token "
              "(and the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN) "
              "in every shell that runs `ray start` or a sweep")
FOUND_HINT = ("--address auto found an existing Ray cluster at {target} (started by `ray start` on this "
              "machine, maybe by another user) and it refuses this process (token authentication); to run "
              "a private Ray, leave out --address (and unset RAY_ADDRESS): the sweep then starts its own; "
              "to join that cluster, export RAY_AUTH_MODE=token and its token (~/.ray/auth_token)")


def _refused(address: str | None, target: str | None = None) -> ConfigError:
    """The one line for a cluster that refused this process's token (or its lack of one)."""
    if address == "auto":
        return ConfigError(FOUND_HINT.format(target=target or "the address `ray start` recorded"))
    return ConfigError("--address: " + TOKEN_HINT.format(address=address))


def check_auth(address: str | None) -> None:
    """Before ray.init: a HOST:PORT cluster that refuses this process's token (or its lack of one)
    is one line saying what to set, not a minute of retries ending in "Failed to connect".

    Ray's own GCS client asks the cluster for its id, which a token-authenticated GCS refuses
    at once with AuthenticationError. Its C++ warning about the refusal is kept off stderr."""
    if address is None or address == "local" or address.startswith("ray://"):
        return
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    target = address
    if address == "auto":  # the cluster `ray start` recorded on this machine (or $RAY_ADDRESS)
        from ray._private.services import canonicalize_bootstrap_address

        try:
            target = canonicalize_bootstrap_address(address)
        except Exception:  # noqa: BLE001 - no cluster found: ray.init says so
            return
        if not target:
            return
    refused = False
    with _stderr_to_devnull():
        try:
            GcsClient(address=target)
        except AuthenticationError:
            refused = True
        except Exception:  # noqa: BLE001 - anything else: ray.init reports it in its own words
            return
    if refused:
        raise _refused(address, target)


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """File descriptor 2 to /dev/null (C++ logs bypass sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def connect(address: str | None, num_cpus: int | None, runtime_env: dict[str, Any] | None = None) -> None:
    """ray.init; a token refused there too (a race with `check_auth`) is the same one line.

    No address: a new local Ray ("local"), never a cluster that `ray start` left running on
    this machine (Ray's own default joins one silently); --address auto joins that one.
    """
    import ray
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=address or "local", num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=True, configure_logging=True, logging_level="WARNING",
                 runtime_env=runtime_env)  # the --plugin modules (cluster.plugins)
    except AuthenticationError:
        raise _refused(address) from None


def check_resources(settings: Settings, plan: Plan, cluster: dict[str, float], *, remote: bool) -> Gpus:
    """GPUs per worker (a number, or AUTO), after checking a trial fits the cluster."""
    gpus: Gpus | None = settings.gpus_per_worker
    have_gpu = cluster.get("GPU", 0)
    if gpus == AUTO and not have_gpu and not remote:
        print("note: --gpus-per-worker auto, but the local Ray has no GPU: trials train on CPU",
              file=sys.stderr)
        gpus = 0.0
    if gpus is None:
        gpus = 1.0 if have_gpu > 0 else 0.0
        if remote and not have_gpu:
            print("note: the Ray cluster has no GPU now, so trials reserve none (CPU training); on an "
                  "autoscaling cluster, --gpus-per-worker 1 makes the autoscaler start GPU workers",
                  file=sys.stderr)
    if gpus == 0 and any(c.run.device == "cuda" for c in plan.trial_configs()):
        raise ConfigError("run.device: cuda, but trials reserve no GPU (--gpus-per-worker 0 or no GPU "
                          "in the Ray cluster); use run.device=auto or cpu, or --gpus-per-worker 1")
    workers = settings.workers_per_trial
    per_worker = worker_gpus(gpus) if workers > 1 else (
        max(gpu_share(c) for c in plan.trial_configs()) if gpus == AUTO else float(gpus))
    need_cpu = workers * settings.cpus_per_worker + (0.01 if workers > 1 else 0)
    if need_cpu > cluster.get("CPU", 0) or per_worker * workers > have_gpu:
        message = (f"a trial needs {need_cpu:g} CPUs and {per_worker * workers:g} GPUs but the Ray cluster "
                   f"has {cluster.get('CPU', 0):g} CPUs and {have_gpu:g} GPUs")
        if not remote:
            raise ConfigError(f"--workers-per-trial/--cpus-per-worker/--gpus-per-worker: {message} "
                              f"(lower --cpus-per-worker, e.g. 0.5, or raise --num-cpus)")
        print(f"note: {message} now; trials wait for the autoscaler", file=sys.stderr)
    return gpus
