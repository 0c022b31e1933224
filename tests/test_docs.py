"""The documentation: the site builds with `mkdocs build --strict` (a broken internal link, a
page missing from the nav or a missing image fails it), the generated reference pages list every
space and key the CLI knows, the light commands of the getting-started page run, and the
README's links and the site's images point at files that exist and are used."""

from __future__ import annotations

import html
import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GETTING_STARTED = DOCS / "getting-started.md"
#: The CLI flags whose commands are light enough to run in the suite.
LIGHT_FLAGS = ("--help", "--list-spaces", "--list-keys", "--dry-run")
CLI = "python -m orchestrator.sweep"
#: MkDocs' plugins print a banner about MkDocs' future on every build; not ours to show.
QUIET = {"DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}
ERROR_LINE = re.compile(r"^(error|Traceback)\b|^\w*Error: ", re.MULTILINE)


def _env() -> dict[str, str]:
    env = {**os.environ, **QUIET, "PYTHONPATH": str(ROOT)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def _page_text(site: Path, page: str) -> str:
    return html.unescape((site / page / "index.html").read_text(encoding="utf-8"))


def test_the_site_builds_strict_with_every_page_and_marker_expanded(site: Path) -> None:
    pages = sorted(p.relative_to(DOCS).with_suffix("") for p in DOCS.rglob("*.md"))
    assert len(pages) >= 15
    for page in pages:
        built = site / ("" if page.name == "index" else page) / "index.html"
        assert built.is_file(), f"{page}.md was not built"
        assert "<!-- generated:" not in built.read_text(encoding="utf-8"), f"{page}: a marker left"
    for page in ("reference/spaces", "reference/config-keys", "reference/cli", "changelog"):
        assert (site / page / "index.html").is_file()


def test_the_generated_spaces_page_lists_every_space_the_cli_knows(site: Path) -> None:
    listed = [line.split()[0] for line in _cli("--list-spaces").splitlines()[1:] if line.strip()]
    page = _page_text(site, "reference/spaces")
    rows = re.findall(r"<tr>\s*<td><code>([\w.]+)</code></td>", page)
    assert len(listed) >= 20
    assert rows == listed


def test_the_generated_keys_page_lists_every_key_the_cli_knows(site: Path) -> None:
    # --list-keys prints a method key once per method that has it; the page lists it once, or
    # once per distinct declaration, on consecutive rows.
    listed = list(dict.fromkeys(line.split()[0] for line in _cli("--list-keys").splitlines() if line.strip()))
    page = _page_text(site, "reference/config-keys")
    rows = re.findall(r"<tr>\s*<td><code>([\w.]+)</code></td>", page)
    assert len(listed) >= 50
    assert [key for key, _ in itertools.groupby(rows)] == listed


def test_the_family_pages_show_their_generated_keys_and_spaces(site: Path) -> None:
    expect = {"families/strong-lottery-tickets": ("method.coats", "iep_quick"),
              "families/dynamic-sparse-training": ("method.criterion", "dst_quick"),
              "families/imp": ("method.repel_lambda", "imp_quick")}
    for page, (key, space) in expect.items():
        text = _page_text(site, page)
        assert f"<code>{key}</code>" in text, f"{page}: no row for {key}"
        assert f"<code>{space}</code>" in text, f"{page}: no row for {space}"


def test_the_cli_reference_is_the_parsers_help(site: Path) -> None:
    page = _page_text(site, "reference/cli")
    for flag in ("--space", "--set", "--grid", "--search", "--dry-run", "--resume", "--list-keys"):
        assert flag in page


# ----------------------------------------------------------------------------- commands

def shell_commands(markdown: str) -> list[str]:
    """Each command of the page's ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL):
        for cmd in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            cmd = cmd.split(" #", 1)[0].strip()
            if cmd and not cmd.startswith("#"):
                commands.append(cmd)
    return commands


def light_cli_commands() -> list[str]:
    return [c for c in shell_commands(GETTING_STARTED.read_text(encoding="utf-8"))
            if c.startswith(CLI) and any(flag in shlex.split(c) for flag in LIGHT_FLAGS)]


def test_the_command_extractor_finds_joined_commands_and_drops_comments() -> None:
    page = "text\n```bash\npython -m orchestrator.sweep --a \\\n    --dry-run   # note\n# only a comment\nmake x\n```\n"
    assert shell_commands(page) == ["python -m orchestrator.sweep --a --dry-run", "make x"]


def test_the_getting_started_page_has_every_kind_of_light_command() -> None:
    commands = light_cli_commands()
    for flag in LIGHT_FLAGS:
        assert any(flag in shlex.split(c) for c in commands), f"no {flag} command on the page"
    for flag in ("--set", "--grid", "--search"):
        assert any(flag in shlex.split(c) for c in commands), f"no {flag} command on the page"


@pytest.mark.parametrize("command", light_cli_commands())
def test_a_getting_started_command_runs(command: str, tmp_path: Path) -> None:
    run = command.replace("python -m", f"{shlex.quote(sys.executable)} -m", 1)
    # A temporary working directory: nothing a command might write lands in the checkout.
    proc = subprocess.run(["bash", "-c", run], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{out}"
    assert not ERROR_LINE.search(out), f"{command} printed an error:\n{out}"
    assert proc.stdout.strip(), f"{command} printed nothing"
    assert not any(tmp_path.iterdir()), f"{command} wrote {sorted(p.name for p in tmp_path.iterdir())}"


# ----------------------------------------------------------------------------- README, images

def test_the_readme_is_a_front_page_whose_links_exist() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10
    for link in local:
        assert (ROOT / link).exists(), f"README links {link}, which does not exist"


def test_every_image_of_the_site_is_used_by_a_page() -> None:
    images = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.png"))
    assert {i.split("/")[0] for i in images} == {"report", "ui"}
    pages = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md"))
    for image in images:
        assert re.search(rf"\]\((\.\./)*{re.escape(image)}\)", pages), f"docs/{image} is on no page"
