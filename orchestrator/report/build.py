"""Build a report: run every builder, write what the runs allow, log it to the parent runs."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.report import cross, dst, imp, slt
from orchestrator.report.collect import Runs
from orchestrator.report.figure import Figure, Missing
from orchestrator.report.html import write_index

# the cross-family chart and each sweep's overview first: what a reader opens the report for
BUILDERS = [*cross.BUILDERS, *slt.BUILDERS, *dst.BUILDERS, *imp.BUILDERS]
ARTIFACT_DIR = "report"


@dataclass
class Report:
    index: Path
    figures: list[Figure] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def build(runs: Runs, out: Path, title: str, *, quiet_missing: bool = False) -> Report:
    """Every figure the runs allow, under `out`; one line on stderr per figure they do not."""
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Figure] = []
    missing: list[Missing] = []
    files: list[Path] = []
    for builder in BUILDERS:
        result = builder(runs)
        for item in result if isinstance(result, list) else [result]:
            if isinstance(item, Figure):
                files += item.write(out)  # written (and its matplotlib figure closed) at once
                figures.append(item)
            else:
                missing.append(item)
    if not quiet_missing:
        for m in missing:
            print(m.line(), file=sys.stderr)
    index = write_index(out, title, figures, missing, runs.parents, runs.experiment)
    return Report(index, figures, missing, [*files, index])


def log_to_parents(runs: Runs, report: Report) -> None:
    """The whole report under `report/` of every parent run it draws on (the UI's artifact view)."""
    for parent in runs.parents:
        for path in report.files:
            runs.client.log_artifact(parent, str(path), ARTIFACT_DIR)
