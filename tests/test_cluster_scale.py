"""cluster.yaml for sweeps at scale, and the documentation's cluster page, offline.

- The Ray the nodes install is the client's (pyproject.toml's pin, the running venv's Ray).
- The head's MLflow server: SQLite or PostgreSQL backend, artifacts on S3 or shared storage.
- Token authentication on every node, as in cluster.local.yaml.
- Every `ray ...` command of docs/operations/clusters.md parses with Ray's own command line
  (its click definitions: options, types, arguments), and every sweep command there with ours.
  The config files they name are validated by tests/test_cluster_yaml.py; cluster.local.yaml's
  commands and the `ray start` ones also run for real (test_ray_up.py, test_two_node.py).
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest
import ray
import yaml
from ray.scripts.scripts import cli

from orchestrator.sweep import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _config(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _pyproject_ray_pin() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'"ray\[[^\]]*\]==([^"]+)"', text).group(1)


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster.local.yaml"])
def test_nodes_install_the_clients_ray(name: str) -> None:
    commands = [c for c in _config(name)["setup_commands"] if re.search(r"pip install .*ray\[", c)]
    pins = {m for c in commands for m in re.findall(r"ray\[[^\]]*\]==([\w.]+)", c)}
    assert pins == {_pyproject_ray_pin()} == {ray.__version__}, pins


def test_head_runs_mlflow_with_a_database_and_shared_artifacts() -> None:
    (command,) = [c for c in _config("cluster.yaml")["head_start_ray_commands"] if "mlflow server" in c]
    backend = re.search(r'BACKEND="([^"]+)"', command).group(1)
    artifacts = re.search(r'ARTIFACTS="([^"]+)"', command).group(1)
    assert backend.startswith(("sqlite:///", "postgresql://"))
    assert artifacts.startswith("s3://") or artifacts.startswith("/mnt/"), artifacts
    assert '--backend-store-uri "$2"' in command and '--artifacts-destination "$3"' in command
    assert '"$ALLOWED" "$BACKEND" "$ARTIFACTS"' in command
    lines = (ROOT / "cluster.yaml").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if "ARTIFACTS=" in line)
    assert "EDIT" in lines[i] or any("EDIT the bucket" in line for line in lines[i - 12:i])


def test_token_authentication_on_every_node() -> None:
    cfg = _config("cluster.yaml")
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c and "~/.bashrc" in c for c in cfg["initialization_commands"])
    assert any("chmod 600 ~/.ray/auth_token" in c for c in cfg["setup_commands"])


def _section() -> str:
    return (ROOT / "docs" / "operations" / "clusters.md").read_text()


def _commands(section: str) -> list[list[str]]:
    """Commands in the section's bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                out.append(argv)
    return out


def _unparsed(ctx: click.Context) -> list[str]:
    with warnings.catch_warnings():  # Click 8.2 deprecates protected_args (9.0 folds it into args)
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*getattr(ctx, "protected_args", []), *ctx.args]


def _parse_ray(argv: list[str]) -> str:
    """Resolve `ray ...` through Ray's click groups and parse its options; nothing runs."""
    ctx = cli.make_context("ray", list(argv))
    command: click.Command = cli
    args = _unparsed(ctx)
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(ctx, args)
        ctx = command.make_context(name, rest, parent=ctx)
        args = _unparsed(ctx)
    return command.name


def test_the_cluster_page_commands_parse_with_rays_cli() -> None:
    commands = _commands(_section())
    ray_commands = [argv[1:] for argv in commands if argv[0] == "ray"]
    verbs = {_parse_ray(argv) for argv in ray_commands}
    assert {"get-auth-token", "up", "dashboard", "attach", "exec", "submit", "rsync-down", "down",
            "start"} <= verbs, verbs
    sweeps = [argv[3:] for argv in commands if argv[:3] == ["python", "-m", "orchestrator.sweep"]]
    sweeps += [shlex.split(argv[-1].split("&&", 1)[1])[3:] for argv in commands
               if argv[:2] == ["ray", "exec"] and "orchestrator.sweep" in argv[-1]]
    assert len(sweeps) >= 4
    for argv in sweeps:
        build_parser().parse_args(argv)  # exits (SystemExit) on an unknown flag


def test_the_refused_token_line_on_the_cluster_page_is_the_clis() -> None:
    from orchestrator.cluster.resources import TOKEN_HINT

    flat = " ".join(_section().split())
    assert " ".join(TOKEN_HINT.format(address="HEAD_IP:6379").replace("`", "").split()) in flat
