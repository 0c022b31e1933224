"""index.html: every figure with its caption, the paper figure and the commands of its runs.

The page is self-contained: each PNG is inlined as a data: URI, because MLflow's artifact view
shows an HTML artifact from a blob URL, where a relative ``src`` resolves to nothing. The PNG,
CSV and Parquet files stay beside it (the CSV/Parquet links work when the folder is served).
"""

from __future__ import annotations

import base64
import html
import shlex
from pathlib import Path
from typing import Any

from orchestrator.report.collect import sweep_name
from orchestrator.report.figure import Figure, Missing


def sweep_command(parent: Any, experiment: str = "") -> str:
    """The `python -m orchestrator.sweep` line of a parent run (its description when it holds one)."""
    note = parent.data.tags.get("mlflow.note.content", "")
    if "orchestrator.sweep" in note:
        return next(line.strip() for line in note.splitlines() if "orchestrator.sweep" in line)
    p = parent.data.params
    parts = ["python", "-m", "orchestrator.sweep", "--space", p.get("space", "?"),
             "--name", sweep_name(parent)]
    if experiment:
        parts += ["--experiment", experiment]
    if p.get("search", "grid") != "grid":
        parts += ["--search", p["search"]]
    if p.get("num_samples", "1") != "1":
        parts += ["--num-samples", p["num_samples"]]
    parts += [a for k, v in sorted(p.items()) if k.startswith("grid.") for a in ("--grid", f"{k[5:]}={v}")]
    parts += [a for k, v in sorted(p.items()) if k.startswith("set.") for a in ("--set", f"{k[4:]}={v}")]
    return shlex.join(parts)


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def write_index(out: Path, title: str, figures: list[Figure], missing: list[Missing],
                parents: dict[str, Any], experiment: str = "") -> Path:
    def esc(s: str) -> str:
        return html.escape(str(s))

    body = [f"<h1>{esc(title)}</h1>",
            f"<p>{len(figures)} figure(s) from {len(parents)} sweep(s). Each PNG has its numbers beside it "
            "as CSV and Parquet.</p>"]
    for f in figures:
        cmds = "".join(f"<pre>{esc(sweep_command(parents[p], experiment))}</pre>" for p in f.parents if p in parents)
        body.append(
            f'<section id="{esc(f.name)}"><h2>{esc(f.title)}</h2>'
            f'<img src="{_data_uri(out / (f.name + ".png"))}" alt="{esc(f.title)}" data-file="{esc(f.name)}.png">'
            f"<p>{esc(f.caption)}</p><p><b>Paper:</b> {esc(f.paper)} &middot; "
            f'<a href="{esc(f.name)}.csv">CSV</a> &middot; <a href="{esc(f.name)}.parquet">Parquet</a></p>'
            f"<details><summary>runs: {len(f.parents)} sweep(s)</summary>{cmds}</details></section>")
    if missing:
        items = "".join(f"<li>{esc(m.line())}</li>" for m in missing)
        body.append(f"<h2>Not produced</h2><ul>{items}</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "img{max-width:100%;border:1px solid #ddd}pre{background:#f4f4f4;padding:.4em;overflow-x:auto}"
             "section{margin-bottom:2.5em}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
