"""Helpers shared by test modules that drive the engine (`trainables.loop`) directly, by the
table-driven bad-input tests of the CLI, and by the model tests (a recording layer factory)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from trainables.config import ExperimentConfig
from trainables.loop import run_experiment
from trainables.models.layers import DENSE, LayerFactory


def _collect(cfg: ExperimentConfig, tmp: Path, **kw: Any) -> tuple[list[dict], list[tuple[int, Path]]]:
    reports: list[dict] = []
    ckpts: list[tuple[int, Path]] = []

    def reporter(metrics: dict, ckpt_dir: Path | None) -> None:
        reports.append(dict(metrics))
        if ckpt_dir is not None:
            dest = tmp / f"checkpoint_{len(ckpts):06d}"
            shutil.copytree(ckpt_dir, dest)
            ckpts.append((int(metrics["epoch"]), dest))

    tmp.mkdir(parents=True, exist_ok=True)
    run_experiment(cfg, reporter=reporter, **kw)
    return reports, ckpts


def run_collecting(cfg: ExperimentConfig, tmp: Path, **kw: Any) -> tuple[list[dict], list[Path]]:
    """Reports of a run, and a copy of each checkpoint laid out as Tune does (checkpoint_00000N).

    `kw` goes to run_experiment (resume_from=..., report_restored=...)."""
    reports, ckpts = _collect(cfg, tmp, **kw)
    return reports, [path for _, path in ckpts]


def run_by_epoch(cfg: ExperimentConfig, tmp: Path, resume: Path | None = None) -> tuple[list[dict], dict[int, Path]]:
    """Reports of every epoch and a copy of every checkpoint, by the epoch it was taken at."""
    reports, ckpts = _collect(cfg, tmp, resume_from=resume)
    return reports, dict(ckpts)


def assert_refused(main: Callable[[list[str]], int], argv: list[str], message: str, storage: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    """Bad input: exit 2, one line naming `message`, no password echoed, nothing written."""
    assert main([*argv, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert "s3cret" not in err  # a refused password is not echoed either
    assert not storage.exists() or not any(storage.rglob("*")), "bad input must not write anything"


class RecordingFactory:
    """A layer factory (DENSE by default) that remembers every module it made."""

    def __init__(self, base: LayerFactory = DENSE) -> None:
        self.made: list[nn.Module] = []
        self.factory = LayerFactory(conv=self._wrap(base.conv), linear=self._wrap(base.linear),
                                    norm=self._wrap(base.norm))

    def _wrap(self, make: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        def build(*args: Any, **kwargs: Any) -> nn.Module:
            module = make(*args, **kwargs)
            self.made.append(module)
            return module
        return build
