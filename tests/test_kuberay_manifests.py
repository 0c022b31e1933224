"""The KubeRay manifests in deploy/kubernetes/, checked offline (no Kubernetes runs here): they
parse, carry the fields a KubeRay user must set, agree with the sweep's flags (the worker
group's GPUs and --gpus-per-worker, the volume and --storage, MLflow's URI), keep token
authentication on, and the RayJob's entrypoint is a command the CLI accepts (--dry-run)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"


def load(name: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert len(docs) == 1
    return docs[0]


def cluster_spec(name: str) -> dict[str, Any]:
    doc = load(name)
    assert doc["apiVersion"] == "ray.io/v1"
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def sweep_args(entrypoint: str) -> list[str]:
    words = shlex.split(entrypoint)
    assert words[:3] == ["python", "-m", "orchestrator.sweep"], words[:3]
    return words[3:]


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from the entrypoint"
    return args[args.index(name) + 1]


def gpus(container: dict[str, Any]) -> float:
    limits = container["resources"]["limits"]
    return float(limits.get("nvidia.com/gpu", 0))


def test_rayjob_has_what_kuberay_needs() -> None:
    job = load("rayjob.yaml")
    assert job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert spec["entrypoint"].strip()
    yaml.safe_load(spec["runtimeEnvYAML"])  # a string KubeRay parses as YAML itself


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_cluster_spec(name: str) -> None:
    spec = cluster_spec(name)
    assert spec["authOptions"] == {"mode": "token", "secretName": "sparsesweep-ray-token"}
    head = spec["headGroupSpec"]
    (head_container,) = head["template"]["spec"]["containers"]
    assert head_container["image"] and head["rayStartParams"]["num-gpus"] == "0" and gpus(head_container) == 0
    (group,) = spec["workerGroupSpecs"]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["image"] == head_container["image"]  # one image: the same code and venv everywhere
    assert gpus(worker) >= 1 and float(group["rayStartParams"]["num-gpus"]) == gpus(worker)
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == worker["resources"]["limits"]["nvidia.com/gpu"]
    for pod in (head["template"]["spec"], group["template"]["spec"]):  # one shared volume for --storage
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert claims == {"sweeps": "sparsesweep-runs"}
        mounts = {m["name"]: m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert mounts["sweeps"] == "/mnt/sweeps"


def test_the_interactive_cluster_matches_the_job_cluster() -> None:
    job, interactive = cluster_spec("rayjob.yaml"), cluster_spec("raycluster.yaml")
    assert job["workerGroupSpecs"] == interactive["workerGroupSpecs"]
    assert job["authOptions"] == interactive["authOptions"]
    assert job["headGroupSpec"]["template"]["spec"]["containers"] == \
        interactive["headGroupSpec"]["template"]["spec"]["containers"]


def test_entrypoint_agrees_with_the_cluster() -> None:
    job = load("rayjob.yaml")
    args = sweep_args(job["spec"]["entrypoint"])
    spec = job["spec"]["rayClusterSpec"]
    (group,) = spec["workerGroupSpecs"]
    (worker,) = group["template"]["spec"]["containers"]
    per_worker = float(flag(args, "--gpus-per-worker"))
    # a trial worker fits in one pod, and the pod's GPUs are used whole (no GPU left idle)
    assert 0 < per_worker <= gpus(worker)
    assert (gpus(worker) / per_worker).is_integer() if per_worker >= 1 else (1 / per_worker).is_integer()
    assert "--address" not in args  # the job server sets RAY_ADDRESS for the driver
    assert flag(args, "--storage") == "/mnt/sweeps"
    (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in head["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == flag(args, "--tracking-uri")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # from a secret, never inline
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"]


def test_entrypoint_passes_the_cli_dry_run(tmp_path: Path) -> None:
    args = sweep_args(load("rayjob.yaml")["spec"]["entrypoint"])
    # the cluster's volume and server are not here: a temp dir and SQLite stand in for them
    args[args.index("--storage") + 1] = str(tmp_path)
    args[args.index("--tracking-uri") + 1] = f"sqlite:///{tmp_path}/mlflow.db"
    done = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args, "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "trials:" in done.stdout
