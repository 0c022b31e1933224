"""Offline validation of cluster.yaml (AWS) and cluster.local.yaml (your own machines) with Ray's
own cluster-launcher code. (tests/test_ray_up.py brings cluster.local.yaml up for real.)

`ray up` runs, in ray.autoscaler._private.commands._bootstrap_config:
  prepare_config  ->  provider.fillout_available_node_types_resources  ->  validate_config
  ->  provider.bootstrap_config
Only the first and third are offline: prepare_config merges the config with the
provider's defaults.yaml (a file inside the Ray wheel, ray/autoscaler/aws/defaults.yaml)
and fills min/max workers (for the local provider: one node type, min = max = the number of
worker_ips); validate_config checks it against ray/autoscaler/ray-schema.json plus a few
cross-field rules. The AWS provider steps import boto3 and call AWS, so they are never called
here; the test also blocks sockets to prove that nothing goes on the network.

NOTE: `prepare_config` / `validate_config` live in ray.autoscaler._private, a PRIVATE API.
They are used as of the Ray version pyproject.toml pins (ray[tune,train]==2.60.0); a Ray
upgrade may move or change them; re-check this test then.
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

jsonschema = pytest.importorskip("jsonschema")  # validate_config needs it (ray[default] dep)

from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402
from test_ray_up import SWEEP, VENV, loopback_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
LOCAL_YAML = ROOT / "cluster.local.yaml"
REMOTE_PROJECT = "~/sparsesweep"


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _pinned(requirement_name: str) -> str:
    """The '==' version pyproject.toml pins for a distribution (extras ignored)."""
    for dep in _pyproject()["project"]["dependencies"]:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)\s*", dep)
        if m and m.group(1).lower() == requirement_name:
            return m.group(3)
    raise AssertionError(f"pyproject.toml does not pin {requirement_name}==...")


@pytest.fixture(scope="module")
def raw() -> dict:
    # `ray up` reads the file with yaml.safe_load, as here.
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _prepare_offline(raw: dict) -> dict:
    """prepare_config + validate_config, as `ray up` runs them, with sockets blocked."""

    def no_network(*args, **kwargs):
        raise AssertionError("cluster config validation tried to use the network")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", no_network)
    mp.setattr(socket, "create_connection", no_network)
    try:
        config = prepare_config(copy.deepcopy(raw))
        validate_config(config)
    finally:
        mp.undo()
    return config


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    return _prepare_offline(raw)


def _worker_types(config: dict) -> dict:
    head = config["head_node_type"]
    return {k: v for k, v in config["available_node_types"].items() if k != head}


def test_validates_with_rays_own_schema(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"].get("region"), "provider.region must be set"
    assert prepared["cluster_name"]


def test_validation_is_not_a_no_op(raw):
    """A config with an unknown node-type field must be rejected by the same code path."""
    bad = copy.deepcopy(raw)
    worker = next(iter(_worker_types(bad)))
    bad["available_node_types"][worker]["gpus"] = 1  # not in the schema
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_head_node_is_cpu_only(prepared):
    head = prepared["head_node_type"]
    node = prepared["available_node_types"][head]
    assert node["resources"].get("GPU", 0) == 0
    assert node["max_workers"] == 0
    assert node["node_config"].get("InstanceType")


def test_gpu_worker_type(prepared):
    workers = _worker_types(prepared)
    assert workers, "need at least one worker node type"
    gpu_workers = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "need at least one worker type that declares GPU resources"
    for name, node in gpu_workers.items():
        assert node["min_workers"] == 0, f"{name}: GPU workers should scale from zero"
        assert 1 <= node["max_workers"] <= prepared["max_workers"], name
        assert node["resources"].get("CPU", 0) >= 1, name
        assert node["node_config"].get("InstanceType"), name
        # Both node types must run the same image (same Python, same driver).
    images = {n["node_config"].get("ImageId") for n in prepared["available_node_types"].values()}
    assert len(images) == 1 and None not in images, images


def test_project_is_mounted_from_existing_paths(raw):
    mounts = raw["file_mounts"]
    by_remote = {remote.rstrip("/"): local for remote, local in mounts.items()}
    assert by_remote.get(f"{REMOTE_PROJECT}/pyproject.toml") is not None
    # Every package that pyproject.toml installs must reach the nodes.
    for pattern in _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]:
        pkg = pattern.rstrip("*")
        assert f"{REMOTE_PROJECT}/{pkg}" in by_remote, f"package {pkg} is not mounted"
    # `ray up` asserts each local path exists (paths are relative to the repo root; "~/..." is
    # the laptop's token, written by `ray get-auth-token --generate`).
    missing = [local for local in mounts.values() if not local.startswith("~") and not (ROOT / local).exists()]
    assert not missing, f"file_mounts sources missing in the repo: {missing}"


def test_setup_installs_the_project_with_rays_pin(prepared):
    ray_pin = _pinned("ray")
    # prepare_config merges setup_commands into head_/worker_setup_commands.
    for key in ("head_setup_commands", "worker_setup_commands"):
        cmds = prepared[key]
        assert any(
            re.search(rf"pip install (\S+ )*-e {re.escape(REMOTE_PROJECT)}(\s|$)", c) for c in cmds
        ), f"{key} does not `pip install -e {REMOTE_PROJECT}`"
        ray_cmds = [c for c in cmds if re.search(r"pip install .*ray\[", c)]
        for c in ray_cmds:
            assert f"=={ray_pin}" in c, f"Ray installed unpinned or at another version: {c}"
    # The autoscaler on the head launches workers through boto3.
    assert any("boto3" in c for c in prepared["head_setup_commands"])


def test_head_starts_ray_and_mlflow_server(prepared):
    cmds = prepared["head_start_ray_commands"]
    assert any("ray start --head" in c and "--autoscaling-config" in c for c in cmds)
    mlflow = [c for c in cmds if "mlflow server" in c]
    assert len(mlflow) == 1, "the head must start exactly one `mlflow server`"
    c = mlflow[0]
    for flag in ("--host 127.0.0.1", "--port 5000", "--allowed-hosts", "--backend-store-uri"):
        assert flag in c, f"mlflow server command lacks {flag}"
    assert "sqlite:///" in c and "nohup" in c
    workers = prepared["worker_start_ray_commands"]
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in workers)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("which", ["cluster.yaml", "cluster.local.yaml"])
def test_every_command_is_valid_bash(which):
    prepared = _prepare_offline(yaml.safe_load((ROOT / which).read_text()))
    keys = (
        "initialization_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    for key in keys:
        for cmd in prepared[key]:
            # Ray runs each command as `bash --login -c -i '... && (CMD)'`; -n: parse only.
            r = subprocess.run(
                ["bash", "-n", "-c", f"({cmd})"], capture_output=True, text=True, timeout=10
            )
            assert r.returncode == 0, f"{key}: {cmd!r}: {r.stderr}"


# ---- cluster.local.yaml: Ray's local provider, machines you already have -------------------


@pytest.fixture(scope="module")
def local_raw() -> dict:
    return yaml.safe_load(LOCAL_YAML.read_text())


@pytest.fixture(scope="module")
def local_prepared(local_raw) -> dict:
    return _prepare_offline(local_raw)


def test_local_validates_with_rays_own_schema(local_prepared):
    provider = local_prepared["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] and isinstance(provider["worker_ips"], list)
    # Every listed worker is started and kept: no autoscaling on machines you own.
    (node,) = local_prepared["available_node_types"].values()
    assert node["min_workers"] == node["max_workers"] == len(provider["worker_ips"])
    assert local_prepared["auth"]["ssh_user"] and local_prepared["auth"]["ssh_private_key"]


def test_local_validation_is_not_a_no_op(local_raw):
    """Ray's schema has no SSH port (a port goes in ~/.ssh/config): the same code rejects one."""
    bad = copy.deepcopy(local_raw)
    bad["auth"]["ssh_port"] = 2222
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_local_lines_to_edit_are_marked():
    lines = LOCAL_YAML.read_text().splitlines()
    for key in ("head_ip:", "worker_ips:", "ssh_user:", "ssh_private_key:"):
        (i,) = [i for i, line in enumerate(lines) if line.strip().startswith(key)]
        assert "EDIT:" in lines[i] or "EDIT:" in lines[i - 1], f"{key} is not marked EDIT:"


def test_local_mounts_the_project_and_the_token(local_raw, raw):
    mounts = local_raw["file_mounts"]
    project = {r: loc for r, loc in raw["file_mounts"].items() if r.startswith(REMOTE_PROJECT)}
    assert {r: loc for r, loc in mounts.items() if r.startswith(REMOTE_PROJECT)} == project
    # The token that `ray get-auth-token --generate` wrote on the laptop, on every node
    # (the head passes its file_mounts on to the workers).
    assert mounts.get("~/.ray/auth_token") == "~/.ray/auth_token"
    missing = [loc for loc in project.values() if not (ROOT / loc).exists()]
    assert not missing, missing


def test_local_token_auth_on_every_node(local_prepared):
    # Every command Ray runs on a node, and every `ray exec`/`ray attach` shell, sources
    # ~/.bashrc: RAY_AUTH_MODE=token goes there first (Ray's token-auth guide does the same).
    init = local_prepared["initialization_commands"]
    assert any("export RAY_AUTH_MODE=token" in c and "~/.bashrc" in c for c in init), init
    everything = [c for k, v in local_prepared.items() if k.endswith("_commands") for c in v]
    assert not any("RAY_AUTH_MODE=disabled" in c for c in everything)
    assert any("chmod 600 ~/.ray/auth_token" in c for c in local_prepared["head_setup_commands"])


def test_local_setup_installs_the_project_in_a_venv(local_prepared):
    ray_pin = _pinned("ray")
    for key in ("head_setup_commands", "worker_setup_commands"):
        cmds = local_prepared[key]
        assert any(f"python3 -m venv {VENV}" in c for c in cmds), key
        assert any(f"source {VENV}/bin/activate" in c and "~/.bashrc" in c for c in cmds), key
        assert any(
            re.search(rf"pip install (\S+ )*-e {re.escape(REMOTE_PROJECT)}(\s|$)", c) for c in cmds
        ), f"{key} does not `pip install -e {REMOTE_PROJECT}`"
        for c in (c for c in cmds if re.search(r"pip install .*ray\[", c)):
            assert f"=={ray_pin}" in c, f"Ray installed unpinned or at another version: {c}"
    assert not any("boto3" in c for c in local_prepared["head_setup_commands"])


def test_local_head_starts_ray_and_a_loopback_mlflow(local_prepared):
    cmds = local_prepared["head_start_ray_commands"]
    assert any("ray start --head --port=6379" in c and "--autoscaling-config" in c for c in cmds)
    (mlflow,) = [c for c in cmds if "mlflow server" in c]
    # No authentication on MLflow: 127.0.0.1 only, reached through `ray attach -p 5000`.
    assert "--host 127.0.0.1 --port 5000" in mlflow and "0.0.0.0" not in mlflow
    assert "sqlite:///" in mlflow and "nohup" in mlflow
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c
               for c in local_prepared["worker_start_ray_commands"])


def test_the_loopback_config_of_test_ray_up_validates(local_raw, tmp_path):
    """What tests/test_ray_up.py brings up is cluster.local.yaml minus what it lists."""
    cfg = _prepare_offline(loopback_config(
        local_raw, name="loopback", user="me", key=tmp_path / "key", ray_port=16379,
        mlflow_port=15000, spare_ports=[1, 2, 3]))
    assert not any(c.strip() == "ray stop"
                   for k in ("head_start_ray_commands", "worker_start_ray_commands") for c in cfg[k])
    assert sum("--port=16379" in c for c in cfg["head_start_ray_commands"]) == 1
    assert sum("--port 15000" in c for c in cfg["head_start_ray_commands"]) == 1
    # Everything else of the real config runs: initialization, token, venv activation.
    assert cfg["initialization_commands"] == local_raw["initialization_commands"]
    assert cfg["file_mounts"] == local_raw["file_mounts"]
    kept = [c for c in local_raw["setup_commands"] if "pip install" not in c]
    assert cfg["head_setup_commands"] == kept and len(kept) >= 3


def _cluster_page() -> str:
    return (ROOT / "docs" / "operations" / "clusters.md").read_text()


def test_the_cluster_page_commands_use_the_tested_configs():
    """The cluster page's `ray ...` commands name the two configs these tests validate, and its
    on-prem sweep is the one tests/test_ray_up.py runs through `ray exec`."""
    section = _cluster_page()
    used = re.findall(r"\bray (up|attach|exec|submit|down|dashboard) (\S+\.ya?ml)", section)
    assert {f for _, f in used} <= {"cluster.yaml", "cluster.local.yaml"}, used
    local = {verb for verb, f in used if f == "cluster.local.yaml"}
    assert {"up", "attach", "exec", "submit", "down"} <= local, local
    assert "ray attach cluster.local.yaml -p 5000" in section
    flat = re.sub(r"\\\n\s*", "", section)  # join continued lines
    assert SWEEP in flat, "the cluster page's on-prem sweep differs from the one test_ray_up runs"
