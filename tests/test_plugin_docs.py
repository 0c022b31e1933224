"""The tutorial "Add your own pruning criterion" shows the example plugin's files exactly: the
code a reader copies is the code the integration tests install and run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "development" / "tutorial-criterion.md"
CAPTIONED = re.compile(r"^\*\*`(examples/plugin_criterion/[^`]+)`\*\*\n\n```\w*\n(.*?)\n```$", re.S | re.M)


def test_tutorial_code_blocks_are_the_example_files() -> None:
    shown = dict(CAPTIONED.findall(PAGE.read_text()))
    example = ROOT / "examples" / "plugin_criterion"
    files = {f"examples/plugin_criterion/{p.relative_to(example)}" for p in example.rglob("*")
             if p.is_file() and p.suffix in (".py", ".yaml", ".toml")}
    assert set(shown) == files  # every file of the example is on the page, and nothing else
    for path, code in shown.items():
        assert code == (ROOT / path).read_text().rstrip("\n"), path
