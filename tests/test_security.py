"""Security: no pickle from storage runs code, services bind to loopback, no password in files.

The sweep-level check (a real sweep with fake credentials in its environment, every output
searched, Ray's session logs included) is in tests/test_faults.py.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from trainables.checkpoint_io import CorruptCheckpoint, usable_checkpoint, write_manifest
from trainables.config import ExperimentConfig
from trainables.loop import run_experiment

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("orchestrator", "trainables", "search_spaces") for p in (ROOT / d).rglob("*.py")]
TINY = {"model.name": "mlp", "model.mlp_hidden": "16", "schedule.epochs": 1, "data.batch_size": 64,
        "run.max_steps_per_epoch": 1}


class Payload:
    """Unpickling this runs `touch MARKER`: what a malicious checkpoint on shared storage does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_flat(TINY)
    ckpt = tmp_path / "checkpoint_000000"

    def keep(metrics: dict, d: Path | None) -> None:
        if d is not None:
            shutil.copytree(d, ckpt)

    run_experiment(cfg, reporter=keep)
    marker = tmp_path / "pwned"
    blob = torch.load(ckpt / "state.pt", weights_only=True)
    blob["model"] = Payload(marker)
    torch.save(blob, ckpt / "state.pt")
    write_manifest(ckpt, epoch=1, step=1)  # checksums match: only the unpickler can refuse it
    assert usable_checkpoint(ckpt, warn=lambda _: None) == ckpt
    with pytest.raises(CorruptCheckpoint, match="refused to unpickle"):
        run_experiment(cfg, resume_from=ckpt)
    assert not marker.exists(), "the pickle ran code"


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    f = call.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def test_no_code_reads_a_pickle() -> None:
    """torch.load only with weights_only=True; no pickle/cloudpickle/joblib/dill loads, no
    pandas read_pickle, no numpy allow_pickle: files in shared storage never run code."""
    bad = []
    for path in SOURCES:
        for call in _calls(ast.parse(path.read_text())):
            name = _name(call)
            keywords = {k.arg: k.value for k in call.keywords}
            if name.endswith("torch.load") or name == "load" and "weights_only" in keywords:
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    bad.append(f"{path.relative_to(ROOT)}:{call.lineno} {name} without weights_only=True")
            if re.search(r"(^|\.)(pickle|cloudpickle|joblib|dill)\.loads?$", name) or name.endswith("read_pickle"):
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                value = keywords.get("allow_pickle")
                if isinstance(value, ast.Constant) and value.value is True:
                    bad.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}(allow_pickle=True)")
    assert not bad, bad


def test_ray_token_auth_is_never_turned_off() -> None:
    """Nothing the sweep runs disables Ray's token authentication (tests may, for themselves)."""
    for path in SOURCES:
        text = path.read_text()
        assert not re.search(r"RAY_AUTH_MODE[\"']?\s*[\]=,:)]+\s*[\"']disabled", text), path
    for name in ("cluster.yaml", "cluster.local.yaml"):
        assert "RAY_AUTH_MODE=token" in (ROOT / name).read_text(), name


def _start_commands(name: str) -> list[str]:
    cfg = yaml.safe_load((ROOT / name).read_text())
    return [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cfg.get(key, [])]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster.local.yaml"])
def test_dashboard_and_mlflow_listen_on_loopback_only(name: str) -> None:
    cmds = _start_commands(name)
    heads = [c for c in cmds if "ray start --head" in c]
    assert heads and all("0.0.0.0" not in c for c in cmds), cmds
    # Ray's dashboard defaults to 127.0.0.1; an explicit host must be loopback too
    for c in heads:
        host = re.search(r"--dashboard-host[= ](\S+)", c)
        assert host is None or host.group(1) in ("127.0.0.1", "localhost"), c
    (mlflow,) = [c for c in cmds if "mlflow server" in c]
    assert re.search(r"--host 127\.0\.0\.1\b", mlflow), mlflow


def test_cluster_opens_no_port_but_ssh() -> None:
    """cluster.yaml reaches MLflow and the dashboard through SSH port-forwarding only: it
    defines no security group rule of its own (the launcher's default: SSH in, nodes among
    themselves), and the cluster page says how to forward."""
    text = (ROOT / "cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    node_configs = [cfg["provider"], *(t.get("node_config", {}) for t in cfg["available_node_types"].values())]
    assert not any("SecurityGroupIds" in c or "security_group" in c for c in node_configs)
    assert "IpPermissions" not in text
    page = (ROOT / "docs" / "operations" / "clusters.md").read_text()
    assert "ray attach cluster.yaml -p 5000" in page and "ray dashboard cluster.yaml" in text


def test_the_security_page_documents_mlflow_basic_auth() -> None:
    section = (ROOT / "docs" / "operations" / "security.md").read_text()
    assert "--app-name basic-auth" in section
    assert "MLFLOW_TRACKING_USERNAME" in section and "MLFLOW_TRACKING_PASSWORD" in section
