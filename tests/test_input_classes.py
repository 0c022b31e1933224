"""Bad input by class: every class of value a user types (numbers, URIs and paths, names,
resources beyond the cluster) refused with exit 2, exactly one line on stderr, and the file
system unchanged (no store, no spool, no tune/ folder, nothing in the working directory or
under $HOME). Then a property: any number for any numeric flag or config key ends in exit 0
or exit 2 with one line, never a traceback, never a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.checks import SEED_MAX
from orchestrator.sweep import NUMBERS, main
from trainables.config import METHODS, ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
HUGE = str(10**30)
EP = ["--space", "ep_quick"]

# (argv, what the one line must say); FILE is a regular file made by the test
CASES: list[tuple[list[str], str]] = [
    # 1. numbers: NaN, ±inf, huge, negative, fractional, for flags and config keys
    (["--cpus-per-worker", "nan"], "--cpus-per-worker: 'nan' is not finite; allowed: a number in (0, 1024]"),
    (["--cpus-per-worker", "-0.5"], "--cpus-per-worker: '-0.5' is out of range"),
    (["--gpus-per-worker", "inf"], "--gpus-per-worker: 'inf' is not finite; allowed: a number in [0, 64]"),
    (["--gpus-per-worker", "1.5"], "--gpus-per-worker: 1.5 is more than one GPU but not a whole number"),
    (["--reduction-factor", "inf"], "--reduction-factor: 'inf' is not finite; allowed: a number in (1, 1000000]"),
    (["--reduction-factor", "1"], "--reduction-factor: '1' is out of range"),
    (["--num-samples", HUGE], f"--num-samples: '{HUGE}' is out of range; allowed: an integer in [1, 10000]"),
    (["--num-samples", "101"], "--num-samples: 101 seeds per grid point is out of range"),
    (["--max-concurrent=-inf"], "--max-concurrent: '-inf' is not an integer in [1, 10000]"),
    (["--max-concurrent", "-1"], "--max-concurrent: '-1' is out of range; allowed: an integer in [1, 10000]"),
    (["--optuna-seed", "-1"], f"--optuna-seed: '-1' is out of range; allowed: an integer in [0, {SEED_MAX}]"),
    (["--optuna-seed", str(2**32)], "--optuna-seed: '4294967296' is out of range"),
    (["--grace-period", "2.5"], "--grace-period: '2.5' is not an integer in [1, 1000000]"),
    (["--num-cpus", "0"], "--num-cpus: '0' is out of range; allowed: an integer in [1, 65536]"),
    ([*EP, "--set", f"run.seed={2**32}"], f"run.seed: 4294967296 must be <= {SEED_MAX} (allowed range [0, {SEED_MAX}])"),
    ([*EP, "--set", "run.seed=-1"], "run.seed: -1 must be >= 0"),
    ([*EP, "--set", f"schedule.epochs={HUGE}"], "schedule.epochs: 1000000000000000000000000000000 is not a 64-bit integer"),
    ([*EP, "--set", "optim.lr=-inf"], "optim.lr: expected a finite number, got '-inf'"),
    ([*EP, "--set", "model.width=nan"], "model.width: expected a finite number, got 'nan'"),
    # 2. URIs and paths: scheme, driver, path under a file, malformed URL
    (["--storage", "ftp://host/runs"], "--storage: 'ftp://host/runs': the scheme 'ftp' is not one Tune can write to"),
    (["--storage", "s3:///runs"], "--storage: 's3:///runs' names no bucket or host"),
    (["--storage", "FILE/runs"], "--storage: cannot write under"),
    (["--tracking-uri", "databricks"], "--tracking-uri: databricks needs a Databricks workspace configured"),
    (["--tracking-uri", "ftp://host/x"], "--tracking-uri: 'ftp://host/x' is not supported"),
    (["--tracking-uri", "mysql://u@db/mlflow"], "--tracking-uri: the mysql driver 'mysqldb' is not installed"),
    (["--tracking-uri", "http://[::1"], "--tracking-uri: 'http://[::1' is not a valid URL (Invalid IPv6 URL)"),
    (["--tracking-uri", "http://host:99999"], "--tracking-uri: 'http://host:99999' is not a valid URL"),
    (["--tracking-uri", "sqlite:///FILE/mlflow.db"], "--tracking-uri: cannot write under"),
    (["--search", "optuna", "--optuna-storage", "sqlite:///FILE/x.db"], "--optuna-storage: cannot write under"),
    (["--search", "optuna", "--optuna-storage", "mysql+pymysql://u@db/optuna"],
     "--optuna-storage: the mysql driver 'pymysql' is not installed"),
    (["--search", "optuna", "--optuna-storage", "postgresql+nosuch://u@db/optuna"],
     "--optuna-storage: 'postgresql+nosuch://u@db/optuna': SQLAlchemy has no dialect"),
    # 3. names that become folders, run names or study names
    (["--name", "x" * 300], "--name: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... has 300 characters; allowed: at most 100"),
    (["--name", "a/b"], "--name: 'a/b' holds '/'"),
    (["--name", ".hidden"], "--name: '.hidden' starts with '.'"),
    (["--name", "two\nlines"], "--name: 'two\\nlines' holds '\\n'"),
    (["--name", "tab\there"], "--name: 'tab\\there' holds '\\t'"),
    (["--experiment", "e" * 101], "--experiment: 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee... has 101 characters"),
    (["--experiment", "a b"], "--experiment: 'a b' holds ' '"),
    (["--resume", "../up"], "--resume: '../up' holds '/'"),
    (["--resume", "r" * 256], "--resume: 'rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr... has 256 characters"),
    # 5. messages: a newline in any value stays on one line
    (["--space", "ep\nquick"], "--space: 'ep\\nquick' is not one of"),
    ([*EP, "--set", "optim.lr=0.1\n2"], "optim.lr: expected a number, got '0.1\\n2'"),
]


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime) for p in root.rglob("*")}


@contextlib.contextmanager
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """(a regular file, the storage) in a temp dir that is also $HOME and the working dir;
    asserts on the way out that nothing there changed."""
    home = tmp_path / "home"
    home.mkdir()
    blocker = tmp_path / "FILE"
    blocker.write_text("a regular file")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    yield blocker, tmp_path / "runs"
    assert snapshot(tmp_path) == before, "bad input must write nothing (storage, spool, tune/, $HOME)"


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_each_class_exits_2_with_one_line_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str], message: str) -> None:
    with sandbox(tmp_path, monkeypatch) as (blocker, storage):
        argv = [a.replace("FILE", str(blocker)) for a in argv]
        message = message.replace("FILE", str(blocker))
        if not any(a == "--storage" for a in argv):
            argv += ["--storage", str(storage)]
        code = main(argv)
        err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.parametrize(("argv", "message"), [
    (["--cpus-per-worker", "64"], "a trial needs 64 CPUs and 0 GPUs but the Ray cluster has 1 CPUs and 0 GPUs"),
])
def test_resources_beyond_the_cluster_are_refused_before_any_store(
        tmp_path: Path, argv: list[str], message: str) -> None:
    """What needs the cluster is checked right after Ray connects: one line on stderr (Ray's
    own start-up included), and no MLflow store, spool or tune/ folder."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "--space", "dense_quick",
                           "--set", "model.name=mlp", "--num-cpus", "1", "--storage", str(tmp_path / "runs"), *argv],
                          cwd=tmp_path, env={**env, "HOME": str(home), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr[-3000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists(), "no store, spool or tune/ folder"
    assert not any(home.rglob("*")), "nothing under $HOME"


@pytest.mark.parametrize(("flags", "cluster"), [
    ({"cpus_per_worker": 64.0}, {"CPU": 2.0}),
    ({"gpus_per_worker": 2.0}, {"CPU": 2.0, "GPU": 1.0}),
    ({"gpus_per_worker": 1.0}, {"CPU": 2.0}),
    ({"workers_per_trial": 3, "cpus_per_worker": 1.0}, {"CPU": 2.0}),
])
def test_resources_beyond_a_local_cluster_are_one_line(flags: dict, cluster: dict) -> None:
    """The check that runs right after Ray connects (before any store): several inputs."""
    from orchestrator.cluster.resources import check_resources
    from orchestrator.settings import Settings
    from search_spaces import get_space, make_plan
    from trainables.config import ConfigError

    plan = make_plan(get_space("dense_quick"), search="grid", sets={"data.batch_size": "60"}, grid_overrides={},
                     num_samples=1)
    with pytest.raises(ConfigError, match=r"^--workers-per-trial/--cpus-per-worker/--gpus-per-worker: a trial "
                                          r"needs .* but the Ray cluster has [^\n]*$"):
        check_resources(Settings(**flags), plan, cluster, remote=False)


# ----- property: any number, any numeric flag or key ----------------------------------------

def _numeric_keys() -> list[tuple[str, str]]:
    """(key, method) for every numeric config key; the method whose config holds it."""
    out: dict[str, str] = {}
    cfg = ExperimentConfig()
    for group in ExperimentConfig.GROUPS:
        classes = list(METHODS.items()) if group == "method" else [("edge_popup", type(getattr(cfg, group)))]
        for method, dc in classes:
            hints = typing.get_type_hints(dc)
            for f in dataclasses.fields(dc):
                kinds = {hints[f.name], *typing.get_args(hints[f.name])}
                kinds |= {a for k in list(kinds) for a in typing.get_args(k)}
                if kinds & {int, float} and bool not in kinds:
                    out.setdefault(f"{group}.{f.name}", method)
    return sorted(out.items())


NUMERIC_KEYS = _numeric_keys()
# a space per method whose base holds the method (its swept keys are replaced by --grid)
SPACE_OF = {"edge_popup": ["--space", "ep_quick"], "iep": ["--space", "iep_quick"],
            "dense": ["--space", "dense_quick"], "dst": ["--space", "dst_quick"], "imp": ["--space", "imp_quick"],
            "dense_lrr": ["--space", "dense_quick", "--set", "method.name=dense_lrr"]}
FLAGS = [*NUMBERS, "--gpus-per-worker"]
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e-400", "-0", "0", "1",
                     "0.5", "2", "101", str(2**63), str(2**64), str(SEED_MAX), str(SEED_MAX + 1), "1_0", " 3 "]),
)


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_bound(seconds: int) -> Iterator[None]:
    def alarm(*_: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check_answer(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with time_bound(30), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)  # an exception here is the traceback a user would see
    if code == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    else:
        assert code == 0 and "trials" in out.getvalue(), (argv, code, err.getvalue())


def test_every_numeric_flag_and_key_refuses_non_finite_values(tmp_path: Path) -> None:
    """NaN and ±inf for every numeric flag and config key: exit 2, one line naming it; 2**64
    for every flag too (a config key without an upper bound may take it as a float)."""
    assert len(NUMERIC_KEYS) > 40 and len(FLAGS) == 10
    storage = str(tmp_path / "runs")
    for value in ("nan", "inf", "-inf", str(2**64)):
        for flag in FLAGS:
            with contextlib.redirect_stderr(io.StringIO()) as err:
                assert main(["--dry-run", "--storage", storage, flag, value]) == 2, (flag, value)
            assert err.getvalue().count("\n") == 1 and flag in err.getvalue(), err.getvalue()
        for key, method in NUMERIC_KEYS:
            with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
                code = main(["--dry-run", "--storage", storage, *SPACE_OF[method], "--grid", f"{key}={value}"])
            assert err.getvalue().count("\n") == (code == 2), (key, value, err.getvalue())
            if value == str(2**64) and code == 0:
                assert isinstance(ExperimentConfig.coerce(key, value), float), key
                continue
            assert code == 2, (key, value)
            refused_for_its_value = key in err.getvalue() and "varies this key" not in err.getvalue()
            assert refused_for_its_value or "--grid" in err.getvalue(), (key, value, err.getvalue())
    assert not (tmp_path / "runs").exists()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.lists(st.tuples(st.sampled_from(FLAGS), NUMBER), max_size=2),
       keys=st.lists(st.tuples(st.sampled_from(NUMERIC_KEYS), NUMBER), max_size=2),
       method=st.sampled_from(sorted(SPACE_OF)))
def test_any_number_anywhere_gives_exit_0_or_one_line(tmp_path: Path, flags: list[tuple[str, str]],
                                                     keys: list[tuple[tuple[str, str], str]],
                                                     method: str) -> None:
    storage = tmp_path / "prop"
    argv = ["--dry-run", "--storage", str(storage), *SPACE_OF[method]]
    for flag, value in flags:
        argv += [f"{flag}={value}"]  # = : a value starting with '-' is the flag's, not a new flag
    for (key, _), value in keys:
        argv += [f"--grid={key}={value}"]
    check_answer(argv)
    assert not storage.exists(), "--dry-run writes nothing"


def test_a_port_is_a_number_too() -> None:
    """--address's port: the same Number (1..65535), one line, never OverflowError."""
    from orchestrator.cluster.resources import check_address
    from trainables.config import ConfigError

    for port in ("0", "65536", str(2**70), "99999999999999999999999"):
        with pytest.raises(ConfigError, match=r"--address: '\d+' is out of range; allowed: an integer in \[1, 65535\]"):
            check_address(f"127.0.0.1:{port}", timeout_s=0.5)


# ----- messages ----------------------------------------------------------------------------

def test_address_auto_that_finds_a_cluster_says_so_and_how_to_start_a_private_one() -> None:
    from orchestrator.cluster.resources import _refused

    message = str(_refused("auto", "10.0.0.5:6379"))
    assert message.startswith("--address auto found an existing Ray cluster at 10.0.0.5:6379")
    assert "to run a private Ray, leave out --address (and unset RAY_ADDRESS)" in message
    assert "\n" not in message
    assert str(_refused("10.0.0.5:6379")).startswith("--address: the Ray cluster at 10.0.0.5:6379 requires token")


def test_a_unicode_name_is_a_name_and_its_figures_draw_without_glyph_warnings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    import pandas as pd

    from orchestrator.report.figure import Figure, axes

    name = "スイープ-ü"
    assert main([*EP, "--dry-run", "--name", name, "--storage", str(tmp_path / "runs")]) == 0
    fig, ax = axes()
    ax[0, 0].set_title(f"{name} (ep_quick)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Glyph ... missing from font(s)" is a UserWarning
        Figure("f", "t", "c", "p", pd.DataFrame({"x": [1]}), fig).write(tmp_path / "report")
    assert (tmp_path / "report" / "f.png").is_file()
    assert ax[0, 0].get_title() == "????-ü (ep_quick)"  # what DejaVu Sans can draw, as it is
