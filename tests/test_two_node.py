"""A real two-node Ray cluster on loopback, with token authentication on, joined by a sweep.

What runs, as a user joining machines by hand would do it (README, "Joining a cluster
started with `ray start`"):
- `ray get-auth-token --generate` (in a temporary HOME: the user's own ~/.ray is untouched);
- every shell exports RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (the token file);
- `ray start --head --node-ip-address=127.0.0.1` and a second `ray start --address`, each
  with its own --temp-dir and --num-cpus=1;
- a sweep with `--address`, logging to a real `mlflow server` on 127.0.0.1, its storage a
  directory both nodes read (one machine); its trials must run on both nodes, by the Ray
  node ids in the results;
- the same sweep from a shell without RAY_AUTH_MODE=token: one line saying what to set.

Processes are ended by PID: those whose environment or open files point into the test's temp
dir (`ray stop` would end every Ray process on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from test_ray_up import _comm, _end, _pids_holding

from conftest import MlflowServer, free_port
from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
FAST = ["--set", "run.max_steps_per_epoch=3", "--set", "schedule.epochs=2", "--set", "data.batch_size=32"]
NODE_IDS = """\
import json, ray
ray.init(address="{address}", logging_level="ERROR")
print("NODES", json.dumps(sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])))
"""


class TwoNodes:
    """Head and worker on 127.0.0.1, token auth on; torn down by PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.home = root / "home"
        self.home.mkdir()
        self.token = self.home / ".ray" / "auth_token"

    def env(self, auth: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
        env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
                   RAY_AUTH_TOKEN_PATH=str(self.token))  # marks every process of this cluster
        env["RAY_AUTH_MODE"] = "token" if auth else "disabled"
        return env

    def _ray(self, *args: str, timeout: float = 120, env: dict | None = None) -> str:
        proc = subprocess.run([str(RAY), *args], env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)
        assert proc.returncode == 0, f"ray {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        return proc.stdout + proc.stderr

    def start(self) -> None:
        laptop = {k: v for k, v in self.env().items() if k != "RAY_AUTH_TOKEN_PATH"}
        self._ray("get-auth-token", "--generate", env={**laptop, "HOME": str(self.home)}, timeout=60)
        assert self.token.is_file()
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats",
                  "--include-dashboard=false"]
        self._ray("start", "--head", "--node-name=head", f"--port={self.port}", f"--temp-dir={self.root / 'head'}",
                  f"--dashboard-agent-listen-port={free_port()}", *common)
        self._ray("start", f"--address={self.address}", "--node-name=worker", f"--temp-dir={self.root / 'worker'}",
                  f"--dashboard-agent-listen-port={free_port()}",
                  *(c for c in common if c != "--include-dashboard=false"))

    def node_ids(self) -> list[str]:
        proc = subprocess.run([sys.executable, "-c", NODE_IDS.format(address=self.address)], env=self.env(),
                              capture_output=True, text=True, timeout=120)
        line = next(x for x in proc.stdout.splitlines() if x.startswith("NODES "))
        return json.loads(line.removeprefix("NODES "))

    def teardown(self) -> list[str]:
        for _ in range(3):  # a raylet may start a worker while the others end: look again
            pids = _pids_holding(self.root)
            if not pids:
                break
            _end(pids)
        left = [f"{p} {_comm(p)}" for p in _pids_holding(self.root)]
        shutil.rmtree(self.root, ignore_errors=True)
        return left


@pytest.fixture(scope="module")
def cluster() -> Iterator[TwoNodes]:
    # A short path: Ray's Unix sockets live under --temp-dir (108-byte limit).
    nodes = TwoNodes(Path(tempfile.mkdtemp(prefix="2n-", dir="/tmp")))
    try:
        nodes.start()
        yield nodes
    finally:
        left = nodes.teardown()
        assert not left, f"processes of the test still running: {left}"


def sweep(cluster: TwoNodes, *args: str, auth: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.sweep", "--address", cluster.address, *args],
                          cwd=ROOT, env=cluster.env(auth), capture_output=True, text=True, timeout=300)


def test_sweep_runs_trials_on_both_nodes(cluster: TwoNodes, mlflow_server: MlflowServer,
                                         tmp_path: Path) -> None:
    nodes = cluster.node_ids()
    assert len(nodes) == 2, nodes
    uri = mlflow_server.wait_healthy()
    storage = tmp_path / "shared-runs"  # one machine: both nodes read and write it
    proc = sweep(cluster, "--space", "ep_quick", "--storage", str(storage), "--name", "two", "--experiment", "two-nodes",
                 "--tracking-uri", uri, "--grid", "method.prune_rate=0.2,0.4,0.6,0.8", "--max-concurrent", "2",
                 *FAST)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    table = pd.read_parquet(storage / "tune" / "two" / "results.parquet")
    assert len(table) == 4 and (table["status"] == "OK").all()
    assert sorted(set(table["node_id"])) == nodes, "trials must have run on both nodes"
    # the machine: each node's --node-name (one host here), stable across restarts of Ray
    assert sorted(set(table["machine"])) == ["head", "worker"]
    assert " node" in proc.stdout  # the printed table names each trial's machine

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("two-nodes")
    (parent,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
    children = list(iter_child_runs(client, exp.experiment_id, parent.info.run_id))
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert "results.parquet" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_a_shell_without_the_token_mode_gets_one_line(cluster: TwoNodes, tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    proc = sweep(cluster, "--space", "ep_quick", "--storage", str(storage), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                 *FAST, auth=False)
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: --address: the Ray cluster at {cluster.address} requires token "
                                  f"authentication: export RAY_AUTH_MODE=token")
    assert not storage.exists() and not (tmp_path / "m.db").exists()
