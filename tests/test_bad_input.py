"""Bad input, table-driven, for the keys and flags added since tests/test_sweep_cli.py's table:
the DST family (D, ρ, Δt, T, criteria, growth, schedules), cycles, the failure-recovery flags
and credentials in URIs. Each case: one line naming what is wrong and what is allowed, exit
2, nothing started, nothing written. Then a property: any `--set key=value`, from real keys
with garbage values or garbage keys, ends in exit 0 or exit 2 with one line, never a
traceback, and with --dry-run starts nothing.

IMP (issue 7): rounds, prune fraction, one-shot sparsity, rewind point, λ_r and the repellent
variant, the stability knobs (batch size, warm-up, weight decay), LMC points and the other
IMP keys. (The pretrained weights of another architecture are in test_sweep_cli.)
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from engine_tools import assert_refused
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.sweep import main
from trainables.config import describe_keys

DST = ["--space", "dense_quick", "--set", "method.name=dst"]  # a space whose axes DST keeps
IMP = ["--space", "imp_quick"]
EP = ["--space", "ep_quick"]  # the bad values below are checked against its base
# imp_quick varies the repellent loss in its variants (a --set of those keys is refused): a space that does not
IMP_WD = ["--space", "imp_weight_decay", "--set", "data.dataset=digits", "--set", "model.name=mlp"]
# imp_quick's variants also set the batch size and the epochs per round: checks of those use this
IMP_10 = [*IMP_WD, "--set", "schedule.epochs=10"]


@pytest.mark.parametrize(("argv", "message"), [
    # dynamic sparse training: density D, prune fraction ρ, update period Δt, end T, ...
    # N:M masks (sparsity.pattern): the string, the method's density, ER/ERK, a layer M does not tile
    ([*EP, "--set", "sparsity.pattern=2/4"], "sparsity.pattern: '2/4' is not unstructured, or N:M"),
    ([*EP, "--set", "sparsity.pattern=4:2"], "sparsity.pattern: '4:2' needs 0 < N < M"),
    ([*EP, "--set", "sparsity.pattern=2:4"], "method.prune_rate: 0.2 keeps 0.8 of the weights, but "
                                            "sparsity.pattern=2:4 keeps 0.5"),
    ([*DST, "--set", "sparsity.pattern=2:4", "--set", "method.density=0.5", "--set", "model.name=mlp"],
     "method.distribution: erk sets per-layer densities"),
    ([*EP, "--set", "sparsity.pattern=2:4", "--set", "method.prune_rate=0.5"],
     "sparsity.pattern: 2:4 needs M=4 to divide the input dimension of every masked layer, but features.0.weight "
     "has 9"),
    ([*DST, "--set", "method.density=0"], "method.density: 0.0 must be > 0 (allowed range (0, 1])"),
    ([*DST, "--set", "method.density=1.5"], "method.density: 1.5 must be <= 1 (allowed range (0, 1])"),
    ([*DST, "--set", "method.density=abc"], "method.density: expected a number, got 'abc'"),
    ([*DST, "--set", "method.prune_fraction=0"], "method.prune_fraction: 0.0 must be > 0 (allowed range (0, 1])"),
    ([*DST, "--set", "method.prune_fraction=2"], "method.prune_fraction: 2.0 must be <= 1"),
    ([*DST, "--set", "method.update_period=-5"], "method.update_period: -5 must be >= 0"),
    ([*DST, "--set", "method.update_period=2.5"], "method.update_period: expected an integer, got '2.5'"),
    ([*DST, "--set", "method.update_end=10", "--set", "method.update_period=100"],
     "method.update_end: 10 leaves no update before it with method.update_period=100"),
    ([*DST, "--set", "method.criterion=biggest"],
     "method.criterion: 'biggest' is not one of magnitude, set, mest, sensitivity, rsensitivity, snip, random"),
    ([*DST, "--set", "method.growth=random2"], "method.growth: 'random2' is not one of random, gradient"),
    ([*DST, "--set", "method.distribution=gaussian"], "method.distribution: 'gaussian' is not one of erk, er, uniform"),
    ([*DST, "--set", "method.prune_schedule=exp"], "method.prune_schedule: 'exp' is not one of cosine, linear, constant"),
    ([*DST, "--set", "method.linear_factor=0"], "method.linear_factor: 0.0 must be > 0"),
    ([*DST, "--set", "method.linear_every=0"], "method.linear_every: 0 must be >= 1"),
    ([*DST, "--set", "method.scope=row"], "method.scope: 'row' is not one of local, global"),
    ([*DST, "--set", "method.mest_lambda=-1"], "method.mest_lambda: -1.0 must be >= 0"),
    ([*DST, "--set", "method.jaccard_every=-1"], "method.jaccard_every: -1 must be >= 0"),
    ([*DST, "--set", "method.update_batch_size=5000"],
     "method.update_batch_size: 5000 is larger than the 1437 training examples of digits"),
    ([*DST, "--set", "method.prune_rate=0.5"], "unknown config key 'method.prune_rate'"),
    # cycles (iterative EP, dense LR rewinding), non-finite numbers
    (["--space", "iep_quick", "--set", "method.cycles=2000"], "method.cycles: 2000 must be <= 1000 (allowed range [1, 1000])"),
    (["--space", "dense_quick", "--set", "method.name=dense_lrr", "--set", "method.cycles=0"],
     "method.cycles: 0 must be >= 1"),
    ([*EP, "--set", "method.prune_rate=nan"], "method.prune_rate: expected a finite number, got 'nan'"),
    ([*EP, "--set", "optim.lr=inf"], "optim.lr: expected a finite number, got 'inf'"),
    # IMP: rounds, pruning, rewinding, repellent loss, stability knobs (batch size, warm-up, decay)
    ([*IMP, "--set", "method.rounds=0"], "method.rounds: 0 must be >= 1 (allowed range [1, 1000])"),
    ([*IMP, "--set", "method.rounds=two"], "method.rounds: expected an integer, got 'two'"),
    ([*IMP, "--set", "method.prune_fraction=0"], "method.prune_fraction: 0.0 must be > 0 (allowed range (0, 1))"),
    ([*IMP, "--set", "method.prune_fraction=1"], "method.prune_fraction: 1.0 must be < 1 (allowed range (0, 1))"),
    ([*IMP, "--set", "method.scope=row"], "method.scope: 'row' is not one of global, layerwise"),
    ([*IMP, "--set", "method.one_shot_sparsity=0.3"],
     "method.rounds: one-shot pruning (method.one_shot_sparsity=0.3) trains a dense round and one pruned round; "
     "set method.rounds=2, got 8"),
    ([*IMP, "--set", "method.one_shot_sparsity=1.5", "--set", "method.rounds=2"],
     "method.one_shot_sparsity: 1.5 must be < 1 (allowed range (0, 1))"),
    ([*IMP_10, "--set", "method.rewind_epoch=10"],
     "method.rewind_epoch: 10 must be smaller than schedule.epochs (10), the length of round 1"),
    ([*IMP, "--set", "method.rewind_epoch=-1"], "method.rewind_epoch: -1 must be >= 0"),
    ([*IMP, "--set", "method.rewind_step=-3"], "method.rewind_step: -3 must be >= 0"),
    ([*IMP_10, "--set", "method.rewind_step=900", "--set", "data.batch_size=16"],
     "method.rewind_step: 900 must be smaller than the 890 optimizer steps of round 1 (schedule.epochs=10 x 89 "
     "steps at data.batch_size=16)"),
    ([*IMP, "--set", "method.rewind_epoch=1", "--set", "method.rewind_step=5"],
     "method.rewind_step: set rewind_epoch or rewind_step, not both (got 1 and 5)"),
    ([*IMP_WD, "--set", "method.repel=sideways"], "method.repel: 'sideways' is not one of off, all, previous"),
    ([*IMP_WD, "--set", "method.repel_lambda=nan"], "method.repel_lambda: expected a finite number, got 'nan'"),
    ([*IMP_WD, "--set", "method.repel_lambda=strong"], "method.repel_lambda: expected a number, got 'strong'"),
    ([*IMP_WD, "--set", "method.repel=all", "--set", "method.rounds=1"],
     "method.repel: all repels earlier rounds' optima and needs method.rounds >= 2, got 1"),
    ([*IMP, "--set", "method.repel_device=tpu"], "method.repel_device: 'tpu' is not one of device, cpu"),
    ([*IMP, "--set", "method.lmc_points=1"], "method.lmc_points: 1 must be >= 2 (allowed range [2, 1000])"),
    ([*IMP, "--set", "method.copy_data_seed=x"], "method.copy_data_seed: expected an integer, got 'x'"),
    ([*IMP, "--set", "method.bn_batches=-1"], "method.bn_batches: -1 must be >= 0"),
    ([*IMP, "--set", "method.hist_bins=1"], "method.hist_bins: 1 must be >= 2"),
    ([*IMP, "--set", "method.density=0.2"], "unknown config key 'method.density'"),
    ([*IMP_10, "--set", "data.batch_size=0"], "data.batch_size: 0 must be >= 1"),
    ([*IMP_10, "--set", "data.batch_size=2048"], "data.batch_size: 2048 is larger than the 1437 training images of digits"),
    ([*IMP_10, "--grid", "data.batch_size=16,4096"], "data.batch_size: 4096 is larger than the 1437 training images"),
    ([*IMP_10, "--set", "schedule.warmup_epochs=10"], "schedule.warmup_epochs: 10 must be smaller than schedule.epochs (10)"),
    ([*IMP, "--set", "schedule.warmup_epochs=-2"], "schedule.warmup_epochs: -2 must be >= 0"),
    ([*IMP, "--set", "optim.weight_decay=-1e-5"], "optim.weight_decay: -1e-05 must be >= 0"),
    ([*IMP, "--set", "method.affine_bn=maybe"], "method.affine_bn: expected true or false, got 'maybe'"),
    ([*IMP, "--set", "method.prune_biases=2"], "method.prune_biases: expected true or false, got '2'"),
    ([*IMP, "--set", "method.optima_store=tape"], "method.optima_store: 'tape' is not one of memory, disk"),
    # failure-recovery flags and credentials
    (["--sync-mlflow"], "--sync-mlflow: name the sweep to sync with --resume NAME"),
    (["--resume", "nosuch", "--sync-mlflow"], "--resume:"),
    (["--tracking-uri", "http://alice:s3cret@127.0.0.1:5000"],
     "--tracking-uri: the URI holds a password, which would be written to the sweep's files and logs"),
    (["--tracking-uri", "postgresql://alice:s3cret@db/mlflow"], "--tracking-uri: the URI holds a password"),
])
def test_bad_input_exits_2_with_one_line_and_starts_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert_refused(main, argv, message, tmp_path / "runs", capsys)


# ----- property: no input makes a traceback -------------------------------------------------

KEYS = sorted({key for key, _, _ in describe_keys()})
# Printable text as a shell passes it (no NUL), including '=', ',' and brackets.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
GARBAGE = st.one_of(TEXT, st.sampled_from(["", "none", "nan", "-inf", "1e999", "-1", "0", "1e-400", "true",
                                           "[1,2", "(3,)", "1,2,3", "9" * 30, "0x10", " 2 ", "1_000"]))
ASSIGNMENT = st.one_of(
    st.tuples(st.sampled_from(KEYS), GARBAGE).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(TEXT, GARBAGE).map(lambda kv: f"{kv[0]}={kv[1]}"),  # garbage keys
    TEXT,  # no '=' at all
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sets=st.lists(ASSIGNMENT, min_size=1, max_size=3),
       space=st.sampled_from(["ep_quick", "iep_quick", "dense_quick", "dst_quick", "imp_quick"]))
def test_any_set_gives_exit_0_or_one_line_and_starts_nothing(tmp_path: Path, sets: list[str],
                                                            space: str) -> None:
    import ray

    storage = tmp_path / "prop"
    argv = ["--dry-run", "--space", space, "--storage", str(storage)]
    for item in sets:
        argv += ["--set", item]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)  # an exception here is the traceback a user would see
    if code == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
    else:
        assert code == 0 and "trials" in out.getvalue(), (code, err.getvalue())
    assert not ray.is_initialized()
    assert not storage.exists(), "--dry-run must write nothing"


def test_argparse_refusals_are_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A flag without its value (`--set -x=1` reads -x as a flag) or an unknown flag: exit 2
    with one line, not argparse's usage text."""
    for argv in (["--set", "-x=1"], ["--no-such-flag"], ["--max-concurrent", "two"]):
        assert main([*argv, "--storage", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()
