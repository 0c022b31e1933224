"""`ray up cluster.local.yaml` for real, on loopback: Ray's own launcher over a real SSH.

What runs: an sshd of the test's own on 127.0.0.1:<free port> (generated host and user keys);
`ray get-auth-token --generate` on the "laptop"; `ray up -y` of cluster.local.yaml with the
head at 127.0.0.1; `ray submit` of a probe that a wrong Ray token is refused; a tiny sweep
through `ray exec`, whose parent and child runs must appear in the head's MLflow server; then
the head is taken down. Nothing is mocked.

Isolation on a shared developer machine (other Ray clusters may be running here):
- `ray down` and Ray's default start commands run `ray stop`, which kills every Ray process
  of the user on the host by name. Neither runs: the config's `ray stop` lines are dropped,
  and the test ends, by PID, the processes that hold its own temp dir (in their environment,
  as HOME or RAY_TMPDIR, or as an open log file), so nothing else is touched.
- The "head" lives in a temporary HOME: sshd's `SetEnv HOME=...` gives every SSH session
  (launcher commands, rsync, `ray exec`) that HOME, and its ~/.bashrc sets a RAY_TMPDIR of
  the test's own. The ssh client reads an ssh config the test writes, through an `ssh`
  wrapper first on the launcher's PATH (ssh takes its own files from the passwd entry, not
  $HOME). No ~/.ssh file, authorized key or daemon outlives the test.
- Ports are free ones: 6379/5000 may be taken by someone else's cluster.
What the loopback config changes in cluster.local.yaml is listed in that file's header.

Where sshd, rsync or the venv is missing, the test is skipped with the reason; CI
(.ci/run) installs openssh-server and rsync and sets SPARSESWEEP_REQUIRE_RAY_UP=1, which
turns that skip into a failure.
"""

from __future__ import annotations

import contextlib
import copy
import getpass
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
LOCAL_YAML = ROOT / "cluster.local.yaml"
VENV = "~/sparsesweep-venv"  # where cluster.local.yaml's setup puts the venv on each node
# The README's on-prem sweep command starts like this; the loopback test runs it.
SWEEP = "cd ~/sparsesweep && python -m orchestrator.sweep --address auto --tracking-uri http://127.0.0.1:5000"
TINY = (
    "--space ep_quick --grid method.prune_rate=0.5 --set schedule.epochs=1 "
    "--set run.max_steps_per_epoch=2 --max-concurrent 1"
)
EXPERIMENT = "ray-up-loopback"
# Run on the head through `ray submit`: a client with a wrong token is refused, the node's own
# (~/.ray/auth_token, RAY_AUTH_MODE=token from ~/.bashrc) is accepted.
PROBE = """\
import os, subprocess, sys
import ray
# A client with a wrong token: stopped at the GCS's first refusal (it would retry for ~20 s).
bad = subprocess.Popen([sys.executable, "-c", "import ray; ray.init(address='auto')"],
                       env={**os.environ, "RAY_AUTH_TOKEN": "0" * 32},
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
refused = any("InvalidAuthToken" in line for line in bad.stderr)  # stops at the first
bad.kill()
bad.wait()
print("wrong token:", "refused (InvalidAuthToken)" if refused else "ACCEPTED")
ray.init(address="auto")
print(f"right token: {len(ray.nodes())} node(s), RAY_AUTH_MODE={os.environ.get('RAY_AUTH_MODE')}")
"""


def _unavailable(reason: str) -> None:
    """Skip, printing why; CI sets SPARSESWEEP_REQUIRE_RAY_UP=1 so that a skip cannot hide there."""
    if os.environ.get("SPARSESWEEP_REQUIRE_RAY_UP") == "1":
        pytest.fail(f"SPARSESWEEP_REQUIRE_RAY_UP=1 but: {reason}")
    pytest.skip(reason)


def _sub_port(cmd: str, old: int, new: int) -> str:
    out, n = re.subn(rf"(?<![0-9]){old}(?![0-9])", str(new), cmd)
    assert n, f"port {old} not found in {cmd!r}"
    return out


def loopback_config(raw: dict, *, name: str, user: str, key: Path, ray_port: int,
                    mlflow_port: int, spare_ports: list[int]) -> dict:
    """cluster.local.yaml with its head at 127.0.0.1, free ports, no `ray stop`, no pip installs."""
    cfg = copy.deepcopy(raw)
    cfg["cluster_name"] = name
    cfg["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    cfg["auth"] = {"ssh_user": user, "ssh_private_key": str(key)}
    # The head's venv is the test's own (linked at ~/sparsesweep-venv): installing torch
    # into a fresh one takes minutes, and `pip install -e` into the test's venv would
    # repoint the developer's editable install at the temporary copy.
    cfg["setup_commands"] = [c for c in raw["setup_commands"] if "pip install" not in c]
    client, dash, agent = spare_ports
    head = []
    for cmd in raw["head_start_ray_commands"]:
        if cmd.strip() == "ray stop":
            continue
        if "ray start --head" in cmd:
            cmd = _sub_port(cmd, 6379, ray_port) + (
                f" --dashboard-port={dash} --dashboard-agent-listen-port={agent}"
            )
            if importlib.util.find_spec("grpc"):  # ray[client]: its server defaults to 10001
                cmd += f" --ray-client-server-port={client}"
        if "mlflow server" in cmd:
            cmd = _sub_port(cmd, 5000, mlflow_port)
        head.append(cmd)
    cfg["head_start_ray_commands"] = head
    cfg["worker_start_ray_commands"] = [
        c for c in raw["worker_start_ray_commands"] if c.strip() != "ray stop"
    ]
    return cfg


# ---- processes, found by what the test gave them, ended by PID -------------------------------


def _pids_holding(root: Path) -> list[int]:
    """This user's processes tied to the test's temp dir: an environment variable, an open file
    or a cwd under it. The environment marks everything started through the test's sshd
    (HOME, RAY_TMPDIR) or launcher (PATH, HOME); the open files catch the Ray processes that
    overwrite their environ with a process title (e.g. ray::DashboardAgent), whose logs stay
    open under the head's RAY_TMPDIR."""
    prefix = f"{root}/"
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if d.stat().st_uid != os.getuid() or not _alive(int(d.name)):
                continue
            if prefix.encode() in (d / "environ").read_bytes():
                pids.append(int(d.name))
                continue
            links = [d / "cwd", *(d / "fd").iterdir()]
        except OSError:
            continue
        for link in links:
            try:
                if os.readlink(link).startswith(prefix):
                    pids.append(int(d.name))
                    break
            except OSError:
                continue
    return pids


def _comm(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _end(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL after grace_s, each given PID; returns those that needed SIGKILL."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    stubborn = [p for p in pids if _alive(p)]
    for pid in stubborn:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return stubborn


def _run(cmd: list[str], *, env: dict, log: Path, timeout_s: float, cwd: Path = ROOT) -> tuple[int, float, str]:
    """Run a launcher command in its own process group (killed as a group on timeout)."""
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -9
    return rc, time.monotonic() - t0, log.read_text(errors="replace")


# ---- the loopback "machine": sshd + temporary HOME -------------------------------------------


class Loopback:
    """A throw-away sshd on 127.0.0.1 whose sessions get a temporary HOME; torn down by PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.home = root / "home"  # the head's HOME
        self.laptop = root / "laptop"  # the launcher's HOME (holds the token, like a laptop)
        self.head_tmp = root / "head-tmp"  # RAY_TMPDIR on the head: marks its processes
        self.launcher_tmp = root / "launcher-tmp"  # RAY_TMPDIR/TMPDIR of ray up / ray exec
        for d in (self.bin, self.home, self.laptop, self.head_tmp, self.launcher_tmp):
            d.mkdir()
        self.key = root / "id_ed25519"
        self.user = pwd.getpwuid(os.getuid()).pw_name  # the account sshd logs in
        self.port = free_port()
        self.sshd: subprocess.Popen | None = None
        self.cluster_name = f"sparsesweep-loopback-{root.name.removeprefix('rayup-').lower()}"

    def start(self) -> None:
        sshd = shutil.which("sshd") or next(
            (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None)
        missing = [n for n, p in (("sshd (openssh-server)", sshd), ("ssh", shutil.which("ssh")),
                                  ("ssh-keygen", shutil.which("ssh-keygen")),
                                  ("rsync", shutil.which("rsync"))) if not p]
        if missing:
            _unavailable(f"needs {', '.join(missing)} (Debian: apt-get install openssh-server rsync)")
        if os.getuid() == 0 and not os.path.isdir("/run/sshd"):
            # sshd's privilege-separation directory; Debian's service creates it at start.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        r = self.root
        for k in ("host_key", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ray-up-test",
                            "-f", str(r / k)], check=True, timeout=30)
        shutil.copyfile(r / "id_ed25519.pub", r / "authorized_keys")
        (r / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {r}/host_key\n"
            f"AuthorizedKeysFile {r}/authorized_keys\n"
            f"AllowUsers {self.user}\n"
            "PidFile none\nUsePAM no\nStrictModes no\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"SetEnv HOME={self.home}\n"
        )
        # The client side: an ssh config for 127.0.0.1 -> our port, read through a wrapper.
        (r / "ssh_config").write_text(f"Host 127.0.0.1\n    Port {self.port}\n")
        wrapper = self.bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {r}/ssh_config "$@"\n')
        wrapper.chmod(0o755)
        with open(r / "sshd.log", "wb") as log:  # -D: stays in the foreground, so its PID is ours
            self.sshd = subprocess.Popen([sshd, "-D", "-e", "-f", str(r / "sshd_config")],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        deadline = time.monotonic() + 15
        while True:
            if self.sshd.poll() is not None:
                _unavailable(f"sshd exited with {self.sshd.returncode}: {self._log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    _unavailable(f"sshd did not listen on 127.0.0.1:{self.port}: {self._log()}")
                time.sleep(0.1)
        probe = subprocess.run(
            [str(wrapper), "-i", str(self.key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             f"{self.user}@127.0.0.1", "echo $HOME"], capture_output=True, text=True, timeout=30)
        if probe.returncode != 0 or probe.stdout.strip() != str(self.home):
            _unavailable(f"ssh login to the test's sshd failed: {probe.stderr.strip()} {self._log()}")

    def _log(self) -> str:
        return (self.root / "sshd.log").read_text(errors="replace")[-2000:]

    def launcher_env(self) -> dict[str, str]:
        """The environment of `ray up`/`ray exec`: a laptop with the token, our ssh first on PATH."""
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(PATH=f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}", HOME=str(self.laptop),
                   RAY_TMPDIR=str(self.launcher_tmp), TMPDIR=str(self.launcher_tmp),
                   RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
        return env

    def teardown(self, cluster_name: str) -> list[str]:
        """Ends, by PID, every process holding the test's temp dir: the head's Ray processes and
        MLflow server, the launcher's SSH masters, sshd and its sessions. Returns what is left."""
        for _ in range(3):  # a dying raylet may still start a worker; look again
            pids = _pids_holding(self.root)
            if self.sshd is not None and self.sshd.poll() is None:
                pids.append(self.sshd.pid)
            if not pids:
                break
            t0 = time.monotonic()
            stubborn = _end(pids)
            print(f"teardown: ended {len(pids)} processes in {time.monotonic() - t0:.1f} s"
                  + (f", SIGKILL for {[_comm(p) for p in stubborn]}" if stubborn else ""))
        if self.sshd is not None:
            self.sshd.wait(timeout=5)
        left = [f"{p} {_comm(p)}" for p in _pids_holding(self.root)]
        # Ray's SSH control-socket dir for this cluster (command_runner.SSHCommandRunner).
        user_hash = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
        control = Path(f"/tmp/ray_ssh_{user_hash}")
        shutil.rmtree(control / hashlib.sha256(cluster_name.encode()).hexdigest()[:10],
                      ignore_errors=True)
        with contextlib.suppress(OSError):
            control.rmdir()  # only if no other cluster of this user uses it
        shutil.rmtree(self.root, ignore_errors=True)
        return left


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    # A short path: Ray's Unix sockets live under RAY_TMPDIR (108-byte limit).
    host = Loopback(Path(tempfile.mkdtemp(prefix="rayup-", dir="/tmp")))
    try:
        yield host
    finally:
        left = host.teardown(host.cluster_name)
        assert not left, f"processes of the test still running: {left}"


def test_ray_up_runs_a_sweep_on_loopback(loopback: Loopback) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    ray = scripts / "ray"
    if sys.prefix == sys.base_prefix or not ray.exists():
        _unavailable(f"needs to run from the project's venv with its `ray` script (got {sys.prefix})")
    loopback.start()
    env = loopback.launcher_env()
    t_start = time.monotonic()

    # On the laptop: the README's one-time token step (writes $HOME/.ray/auth_token).
    rc, _, out = _run([str(ray), "get-auth-token", "--generate"], env=env,
                      log=loopback.root / "token.log", timeout_s=60)
    token = loopback.laptop / ".ray" / "auth_token"
    assert rc == 0 and token.is_file(), out

    # The head's HOME, as a user's would be before the first `ray up`: a ~/.bashrc (here it
    # also sets the test's RAY_TMPDIR), and the venv (the test's own) where the config expects it.
    h = loopback.home
    (h / ".bashrc").write_text(
        f"export RAY_TMPDIR={loopback.head_tmp}\nexport RAY_USAGE_STATS_ENABLED=0\n")
    (h / VENV.removeprefix("~/")).symlink_to(sys.prefix)

    ray_port, mlflow_port = free_port(), free_port()
    cfg = loopback_config(
        yaml.safe_load(LOCAL_YAML.read_text()), name=loopback.cluster_name, user=loopback.user,
        key=loopback.key, ray_port=ray_port, mlflow_port=mlflow_port,
        spare_ports=[free_port() for _ in range(3)])
    config = loopback.root / "cluster.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))

    rc, t_up, out = _run([str(ray), "up", "-y", "--disable-usage-stats", "--no-config-cache",
                          str(config)], env=env, log=loopback.root / "up.log", timeout_s=100)
    assert rc == 0, f"ray up failed ({rc}):\n{out[-6000:]}"
    assert f"MLflow server up on 127.0.0.1:{mlflow_port}" in out, out[-3000:]

    # The head runs with token auth and the laptop's token.
    head = _pids_holding(loopback.head_tmp)
    gcs = [p for p in head if _comm(p) == "gcs_server"]
    assert gcs, f"no gcs_server among the head's processes {[_comm(p) for p in head]}"
    gcs_env = Path(f"/proc/{gcs[0]}/environ").read_bytes().split(b"\0")
    # Ray reads the token from $HOME/.ray/auth_token: the head's, which came from the laptop.
    assert b"RAY_AUTH_MODE=token" in gcs_env and f"HOME={h}".encode() in gcs_env
    assert (h / ".ray" / "auth_token").read_text() == token.read_text()
    assert (h / ".ray" / "auth_token").stat().st_mode & 0o077 == 0

    # What the head's autoscaler uses to set up workers: the token goes to every node, and
    # every node's shells run in token mode.
    boot = yaml.safe_load((h / "ray_bootstrap_config.yaml").read_text())
    assert "~/.ray/auth_token" in boot["file_mounts"], boot["file_mounts"]
    assert any("RAY_AUTH_MODE=token" in c for c in boot["initialization_commands"])

    # `ray submit`: a script run on the head; the cluster refuses a wrong token.
    probe = loopback.root / "probe_auth.py"
    probe.write_text(PROBE)
    rc, t_submit, out = _run([str(ray), "submit", str(config), str(probe)], env=env,
                             log=loopback.root / "submit.log", timeout_s=60)
    assert rc == 0, f"ray submit failed ({rc}):\n{out[-4000:]}"
    assert "wrong token: refused (InvalidAuthToken)" in out, out[-4000:]
    assert "right token: 1 node(s), RAY_AUTH_MODE=token" in out, out[-4000:]

    sweep = SWEEP.replace("127.0.0.1:5000", f"127.0.0.1:{mlflow_port}")
    cmd = f"{sweep} --storage ~/sparsesweep-runs --experiment {EXPERIMENT} {TINY}"
    rc, t_sweep, out = _run([str(ray), "exec", str(config), cmd], env=env,
                            log=loopback.root / "exec.log", timeout_s=120)
    assert rc == 0, f"ray exec of the sweep failed ({rc}):\n{out[-6000:]}"
    assert "Results (sorted by" in out, out[-3000:]

    # The runs, read from the head's MLflow server (what `ray attach -p 5000` shows).
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_port}")
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 1, [r.info.run_name for r in runs]
    parent, child = parents[0], children[0]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    assert float(child.data.params["method.prune_rate"]) == 0.5
    assert "test_acc" in child.data.metrics
    print(f"\nray up {t_up:.1f} s, ray submit {t_submit:.1f} s, sweep via ray exec {t_sweep:.1f} s, "
          f"up to here {time.monotonic() - t_start:.1f} s")
