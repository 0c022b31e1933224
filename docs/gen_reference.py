"""The reference pages, generated from the code on every `mkdocs build` (mkdocs-gen-files).

Nothing here restates a fact the code owns: the keys, their defaults and help come from
`trainables.config.describe_keys` (what `--list-keys` prints), their types and constraints
from the same dataclass fields `validate` reads, the spaces from `search_spaces.REGISTRY`
(what `--list-spaces` prints), a space's family from the method names it runs mapped by
the MLflow family tag's own table, and the CLI page from the sweep's argparse parser.
`tests/test_docs.py` compares these pages with the CLI's own listings.

Run alone (`python docs/gen_reference.py DIR`) it writes the pages into DIR.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# This checkout's code, also where an installed sparsesweep points elsewhere.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# The papers behind the spaces: the file name a space's `paper` field cites -> how a reader
# knows the paper, and the family page that covers it.
PAPERS: dict[str, tuple[str, str]] = {
    "soft-iep-appendix.txt": ("Soft iEP, appendix", "../families/strong-lottery-tickets.md"),
    "soft-iep.txt": ("Soft iEP", "../families/strong-lottery-tickets.md"),
    "fantastic-weights-dst.txt": ("Fantastic Weights (DST)", "../families/dynamic-sparse-training.md"),
    "understanding-imp.txt": ("Understanding IMP", "../families/imp.md"),
}
# A family tag (`sparsesweep.family`) -> its page.
FAMILY_PAGES: dict[str, tuple[str, str]] = {
    "strong_lottery": ("strong lottery tickets", "../families/strong-lottery-tickets.md"),
    "dst": ("dynamic sparse training", "../families/dynamic-sparse-training.md"),
    "imp": ("IMP", "../families/imp.md"),
    "dense": ("dense", ""),
}
METHOD_GROUP = "method"
# Front matter of a page made of wide tables: the table of contents' column goes to the table.
WIDE = ["---", "hide:", "  - toc", "---", ""]


def _family_of(method_name: str) -> str:
    # The table the sweep tags MLflow runs with (`sparsesweep.family`).
    from orchestrator.tracking.labels import family_of

    return family_of(method_name)


# ----------------------------------------------------------------------------- spaces

@dataclass(frozen=True)
class SpaceRow:
    name: str
    families: tuple[str, ...]
    reproduces: str
    trials: int
    optuna: bool
    paper: str


def space_methods(space: Any, default_method: str) -> set[str]:
    """The `method.name`s a space's trials run: its base, its grid axis and its variants."""
    names = {space.base.get("method.name", default_method)}
    names.update(space.grid.get("method.name", ()))
    names.update(v["method.name"] for v in space.variants.values() if "method.name" in v)
    return {str(n) for n in names}


def space_rows() -> list[SpaceRow]:
    from search_spaces import REGISTRY
    from trainables.config import ExperimentConfig

    default_method = ExperimentConfig().method.name
    rows = []
    for s in REGISTRY.values():
        families = tuple(sorted({_family_of(m) for m in space_methods(s, default_method)}))
        rows.append(SpaceRow(s.name, families, s.description, s.grid_size(), bool(s.optuna), s.paper))
    return rows


def _paper_cell(paper: str) -> str:
    """The paper file names a space cites, as links named after the paper."""
    names = "|".join(re.escape(f) for f in sorted(PAPERS, key=len, reverse=True))  # longest first
    return re.sub(names, lambda m: f"[{PAPERS[m.group(0)][0]}]({PAPERS[m.group(0)][1]})", paper)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def spaces_table(rows: Iterable[SpaceRow], *, full: bool = True) -> list[str]:
    """The description last: the one long column, which the site's CSS gives room to read.
    A family page's table (`full=False`) leaves out the family and Optuna columns."""
    head = "| space | family | trials | Optuna | paper figure | what it reproduces |" if full else \
        "| space | trials | paper figure | what it reproduces |"
    out = [head, "| --- | " + ("--- | " if full else "") + "---: | " + ("--- | " if full else "") + "--- | --- |"]
    for r in rows:
        fams = ", ".join(f"[{FAMILY_PAGES[f][0]}]({FAMILY_PAGES[f][1]})" if FAMILY_PAGES.get(f, ("", ""))[1]
                         else FAMILY_PAGES.get(f, (f, ""))[0] for f in r.families)
        cells = [f"`{r.name}`", *([fams] if full else []), str(r.trials),
                 *(["yes" if r.optuna else "no"] if full else []),
                 _paper_cell(_cell(r.paper)) or "-", _cell(r.reproduces)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def spaces_page() -> str:
    from search_spaces import DEFAULT_SPACE

    lines = [
        *WIDE,
        "# Search spaces",
        "",
        "Generated from `search_spaces.REGISTRY` on every build; `python -m orchestrator.sweep "
        "--list-spaces` prints the same list. *Trials* is the grid size of one seed (`--num-samples N` "
        "repeats every point with N seeds); *Optuna* says whether the space also has Optuna "
        "distributions (`--search optuna`). "
        f"The default space is `{DEFAULT_SPACE}`.",
        "",
        *spaces_table(space_rows()),
        "",
        "Run one with `python -m orchestrator.sweep --space NAME`; add `--dry-run` to see "
        "its trials and cost first ([Getting started](../getting-started.md)).",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- keys

@dataclass(frozen=True)
class KeyRow:
    key: str
    type: str
    default: str
    allowed: str
    meaning: str
    methods: tuple[str, ...]  # method keys: the methods this row's declaration belongs to


def _allowed(meta: dict[str, Any]) -> str:
    if meta.get("choices") is not None:
        return ", ".join(f"`{c}`" for c in meta["choices"])
    bounds = [(meta.get(k), sym) for k, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))]
    return " and ".join(f"{sym} {b:g}" for b, sym in bounds if b is not None)


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "(empty)"
    if value == "":
        return '""'
    return str(value)


def _method_rows(key: str, name_default: Any) -> list[KeyRow]:
    """One row per distinct declaration of a `method.*` key among the methods that have it:
    methods that declare it alike share a row."""
    from trainables.config import METHODS

    name = key.split(".", 1)[1]
    if name == "name":
        f = next(f for f in dataclasses.fields(next(iter(METHODS.values()))) if f.name == name)
        allowed = ", ".join(f"`{m}`" for m in METHODS)
        return [KeyRow(key, str(f.type), _fmt(name_default), allowed, "the method; it decides which other "
                       "`method.*` keys exist", ())]
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for mname, cls in METHODS.items():
        for f in dataclasses.fields(cls):
            if f.name == name:
                meta = dict(f.metadata)
                sig = (str(f.type), _fmt(f.default), _allowed(meta), meta.get("help", ""))
                groups.setdefault(sig, []).append(mname)
    return [KeyRow(key, *sig, tuple(owners)) for sig, owners in groups.items()]


def key_rows() -> list[KeyRow]:
    """The keys `--list-keys` prints, in its order, each once (a `method.*` key shared by
    methods that declare it differently has a row per declaration)."""
    from trainables.config import ExperimentConfig, describe_keys

    cfg = ExperimentConfig()
    rows: list[KeyRow] = []
    done: set[str] = set()
    for key, default, helptext in describe_keys():
        if key in done:
            continue
        done.add(key)
        group, name = key.split(".", 1)
        if group == METHOD_GROUP:
            rows += _method_rows(key, default)
            continue
        f = next(f for f in dataclasses.fields(getattr(cfg, group)) if f.name == name)
        rows.append(KeyRow(key, str(f.type), _fmt(default), _allowed(dict(f.metadata)), helptext, ()))
    return rows


def _table(rows: Iterable[KeyRow], with_methods: bool) -> list[str]:
    head = "| key | type | default | allowed | " + ("methods | " if with_methods else "") + "meaning |"
    out = [head, "| --- | --- | --- | --- | " + ("--- | " if with_methods else "") + "--- |"]
    for r in rows:
        methods = ((", ".join(f"`{m}`" for m in r.methods) or "all") + " | ") if with_methods else ""
        out.append(f"| `{r.key}` | `{_cell(r.type)}` | `{_cell(r.default)}` | {_cell(r.allowed) or '-'} | "
                   f"{methods}{_cell(r.meaning)} |")
    return out


def keys_page() -> str:
    from trainables.config import ExperimentConfig

    rows = key_rows()
    lines = [
        *WIDE,
        "# Config keys",
        "",
        "Generated from the config tree (`trainables.config`) on every build; "
        "`python -m orchestrator.sweep --list-keys` prints the same keys. The same dotted keys are "
        "used by `--set`, `--grid`, the search spaces and the MLflow params. *Allowed* is what "
        "validation enforces on the key alone; checks across keys (a model against a dataset, "
        "a rewind step against the epochs) stop the sweep with one line naming both.",
        "",
        "The `method.*` keys depend on `method.name`: a key of another method is an error, "
        "not a silent no-op. *Methods* says which methods have the key; where methods declare "
        "the same key differently (another default, other allowed values), each declaration "
        "has its own row.",
        "",
    ]
    for group in ExperimentConfig.GROUPS:
        mine = [r for r in rows if r.key.split(".", 1)[0] == group]
        lines += [f"## `{group}`", "", *_table(mine, with_methods=group == METHOD_GROUP), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def cli_page() -> str:
    from orchestrator.sweep import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width
    try:
        text = build_parser().format_help()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    text = re.sub(r"^usage: \S+", "usage: python -m orchestrator.sweep", text)
    return ("# Command line\n\nGenerated from the sweep's argument parser on every build: "
            "`python -m orchestrator.sweep --help`.\n\n```text\n" + text + "```\n")


# A page may hold `<!-- generated: spaces FAMILY -->` (the spaces whose trials run FAMILY)
# or `<!-- generated: keys METHOD,METHOD -->` (the method keys of those methods); the build
# replaces the marker with the table.
MARKER = re.compile(r"<!-- generated: (spaces|keys) ([\w,]+) -->")


def _expand(match: re.Match[str]) -> str:
    kind, arg = match.group(1), match.group(2)
    if kind == "spaces":
        rows = [r for r in space_rows() if arg in r.families]
        if not rows:
            raise ValueError(f"generated spaces: no space runs family {arg!r}")
        return "\n".join(spaces_table(rows, full=False))
    methods = arg.split(",")
    rows = [dataclasses.replace(r, methods=tuple(m for m in r.methods if m in methods))
            for r in key_rows() if set(methods) & set(r.methods)]
    if not rows:
        raise ValueError(f"generated keys: no method key belongs to {arg!r}")
    return "\n".join(_table(rows, with_methods=len(methods) > 1))


def expand_markers(text: str) -> str:
    return MARKER.sub(_expand, text)


def changelog_page() -> str:
    return (REPO / "CHANGELOG.md").read_text(encoding="utf-8")


PAGES = {"reference/spaces.md": spaces_page, "reference/config-keys.md": keys_page,
         "reference/cli.md": cli_page, "changelog.md": changelog_page}


def write_all(write: Callable[[str, str], None]) -> None:
    """Every generated page through `write(path, text)`, path relative to the docs directory."""
    for path, make in PAGES.items():
        write(path, make())


if __name__ == "__main__":  # standalone: python docs/gen_reference.py OUT_DIR
    out = Path(sys.argv[1])

    def _write(path: str, text: str) -> None:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text, encoding="utf-8")

    write_all(_write)
elif __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path
    import mkdocs_gen_files

    def _write(path: str, text: str) -> None:
        with mkdocs_gen_files.open(path, "w") as fh:
            fh.write(text)

    write_all(_write)
    docs = REPO / "docs"
    for page in sorted(docs.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        if MARKER.search(text):
            _write(page.relative_to(docs).as_posix(), expand_markers(text))
