"""The sweep CLI's front door: listing, dry runs and bad input (exit 2, nothing started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from engine_tools import assert_refused

from orchestrator.sweep import main

ROOT = Path(__file__).resolve().parents[1]
EP = ["--space", "ep_quick"]  # the bad values below are checked against its base


def test_list_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-spaces"]) == 0
    out = capsys.readouterr().out
    assert "ep_quick" in out and "ep_prune_rates" in out and "ep_hparams" in out


def test_list_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-keys"]) == 0
    out = capsys.readouterr().out
    assert "method.prune_rate" in out and "fraction of each layer's weights PRUNED" in out


def test_dry_run_prints_trials_without_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*EP, "--dry-run", "--storage", str(tmp_path / "s"), "--grid", "method.prune_rate=0.2,0.5",
                 "--num-samples", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "4 trials:" in out and "method.prune_rate=0.5 run.seed=1" in out
    assert not (tmp_path / "s").exists()


def test_dry_run_optuna(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*EP, "--dry-run", "--search", "optuna", "--num-samples", "7"]) == 0
    out = capsys.readouterr().out
    assert "7 Optuna trials over:" in out and "method.prune_rate: FloatDistribution" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--set", "optim.lrr=0.1"], "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ([*EP, "--set", "optim.lr=abc"], "optim.lr: expected a number, got 'abc'"),
    ([*EP, "--set", "optim.lr=-0.1"], "optim.lr: -0.1 must be > 0"),
    ([*EP, "--set", "method.prune_rate=1"], "method.prune_rate: 1.0 must be < 1 (allowed range [0, 1))"),
    (["--set", "model.name=vgg99"], "model.name: 'vgg99' is not one of"),
    ([*EP, "--set", "optim.name=adagrad"], "optim.name: 'adagrad' is not one of sgd, adam, lars"),
    (["--set", "data.dataset=imagenet21k"], "data.dataset: 'imagenet21k' is not one of"),
    (["--set", "noequals"], "--set 'noequals': expected KEY=VALUE"),
    (["--space", "ep_nope"], "--space: 'ep_nope' is not one of ep_quick"),
    (["--search", "bayes"], "--search: 'bayes' is not one of grid, optuna"),
    (["--metric", "accuracy"], "--metric: 'accuracy' is not one of test_acc"),
    (["--max-concurrent", "0"], "--max-concurrent: '0' is out of range; allowed: an integer in [1, 10000]"),
    (["--workers-per-trial", "3"], "data.batch_size: 64 is not divisible by --workers-per-trial 3"),
    (["--tracking-uri", "./mlruns"], "--tracking-uri: './mlruns' is not supported"),
    (["--set", "data.dataset=cifar10", "--set", "data.data_dir=/nonexistent/cifar"],
     "/nonexistent/cifar/cifar-10-batches-py"),
    (["--resume"], "--resume: no sweep to resume in"),
    (["--tracking-uri", "http://127.0.0.1:9"], "--tracking-uri: no MLflow server answers at http://127.0.0.1:9"),
    (["--address", "127.0.0.1:9"], "--address: no Ray cluster answers at 127.0.0.1:9"),
    (["--address", "nohost"], "--address: 'nohost' is not auto, HOST:PORT or ray://HOST:PORT"),
    ([*EP, "--set", "data.batch_size=2000"], "data.batch_size: 2000 is larger than the 1437 training images of digits"),
    ([*EP, "--set", "schedule.name=step", "--set", "schedule.milestones=15"], "schedule.milestones: [15] must lie in [1, schedule.epochs=15)"),
    (["--workers-per-trial", "2", "--gpus-per-worker", "0.5"], "--gpus-per-worker: 0.5 is a GPU share"),
    ([*EP, "--set", "method.name=dense"], "--set method.name=dense: space 'ep_quick' sweeps method.prune_rate"),
    (["--max-failures", "-1"], "--max-failures: '-1' is out of range; allowed: an integer in [0, 1000]"),
    # the strong-lottery family's keys
    (["--space", "iep_quick", "--set", "method.cycles=0"], "method.cycles: 0 must be >= 1"),
    (["--space", "iep_quick", "--set", "method.shrinkage=1"], "method.shrinkage: 1.0 must be < 1"),
    (["--space", "iep_quick", "--set", "method.shrinkage=0"], "method.shrinkage: 0.0 must be > 0"),
    (["--space", "iep_quick", "--set", "method.target_remaining=0.3"],
     "method.shrinkage, method.target_remaining: set one of them, not both"),
    (["--space", "iep_quick", "--set", "method.shrinkage=none", "--set", "method.first_prune_rate=0.5",
      "--set", "method.target_remaining=0.6"], "method.target_remaining: a first prune rate m=0.5 leaves 0.5"),
    (["--space", "iep_quick", "--set", "method.lr_reset=never"], "method.lr_reset: 'never' is not one of rewind, hold"),
    (["--space", "iep_quick", "--set", "method.zero_init=maybe"], "method.zero_init: expected true or false"),
    (["--space", "iep_quick", "--grid", "method.pruning=soft"],
     "--grid method.pruning: space 'iep_quick' varies this key in its variants"),
    (["--space", "iep_quick", "--set", "method.coats=0"], "method.coats: 0 must be >= 1"),
    (["--set", "method.progressive_stages=0"], "method.progressive_stages: 0 must be >= 1"),
    (["--set", "method.progressive_schedule=cubic"], "method.progressive_schedule: 'cubic' is not one of exp, lin"),
    ([*EP, "--set", "method.weight_init=pretrained"], "method.pretrained_path: weight_init=pretrained needs a weights file"),
    (["--set", "method.pretrained_path=/x.pt"], "method.pretrained_path: only read with method.weight_init=pretrained"),
    ([*EP, "--set", "method.weight_init=pretrained", "--set", "method.pretrained_path=/nonexistent/w.pt"],
     "method.pretrained_path: no file at '/nonexistent/w.pt'"),
])
def test_bad_input_exits_2_with_one_line_and_starts_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert_refused(main, argv, message, tmp_path / "runs", capsys)


def test_resume_refuses_flags_that_define_the_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--resume", "--storage", str(tmp_path), "--max-concurrent", "4",
                 "--tracking-uri", "sqlite:////tmp/x.db"]) == 2
    err = capsys.readouterr().err
    assert "--resume: --max-concurrent, --tracking-uri cannot change a sweep being resumed" in err


def test_unwritable_storage_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["--storage", str(blocker / "runs")]) == 2
    assert "--storage: cannot write under" in capsys.readouterr().err


def test_module_entry_point_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *EP, "--set", "optim.lr=x",
                           "--storage", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: optim.lr: expected a number, got 'x'"


def test_seed_summary_means_over_seeds_only() -> None:
    import pandas as pd

    from orchestrator.results import seed_summary
    from search_spaces import get_space, make_plan

    plan = make_plan(get_space("ep_quick"), search="grid", sets={}, grid_overrides={}, num_samples=2)
    rows = [{"trial": f"t{i}", "method.prune_rate": k, "run.seed": s, "test_acc": acc,
             "dying_ratio": d, "k_minus_dying": k - d, "epoch": 15, "status": "OK"}
            for i, (k, s, acc, d) in enumerate([(0.2, 0, 0.90, 0.10), (0.2, 1, 0.94, 0.14),
                                                (0.488, 0, 0.80, 0.40), (0.488, 1, 0.80, 0.44)])]
    rows.append({**rows[0], "trial": "bad", "test_acc": 0.0, "status": "ERROR"})  # ignored
    table = seed_summary(pd.DataFrame(rows), plan)
    assert table.loc[0.2, ("test_acc", "mean")] == pytest.approx(0.92)
    assert table.loc[0.2, ("test_acc", "std")] == pytest.approx(0.0282842712)  # sample std of .90, .94
    assert table.loc[0.488, ("dying_ratio", "mean")] == pytest.approx(0.42)
    assert seed_summary(pd.DataFrame(rows), make_plan(get_space("ep_quick"), search="grid", sets={},
                                                      grid_overrides={}, num_samples=1)) is None


def test_unfinished_trials_count_the_ones_an_interrupt_kept_from_starting() -> None:
    """Ctrl-C between two Optuna trials leaves the next one uncreated: still a sweep to resume."""
    import pandas as pd

    from orchestrator.results import unfinished_trials
    from search_spaces import get_space, make_plan

    optuna = make_plan(get_space("ep_quick"), search="optuna", sets={}, grid_overrides={}, num_samples=4)
    ran = pd.DataFrame({"status": ["OK", "STOPPED"]})
    assert unfinished_trials(ran, optuna) == 2  # two finished, two never created
    assert unfinished_trials(pd.DataFrame({"status": ["OK", "ERROR", "INCOMPLETE"]}), optuna) == 2
    assert unfinished_trials(pd.DataFrame({"status": ["OK"] * 3 + ["DIVERGED"]}), optuna) == 0
    assert unfinished_trials(pd.DataFrame(), optuna) == 4
    grid = make_plan(get_space("ep_quick"), search="grid", sets={}, grid_overrides={}, num_samples=2)
    assert grid.trial_count() == 2 * len(grid.grid["method.prune_rate"]) * max(1, len(grid.variants))
    assert unfinished_trials(pd.DataFrame({"status": ["OK"] * grid.trial_count()}), grid) == 0


def test_pretrained_file_of_another_architecture_is_refused(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    wrong = tmp_path / "mlp.pt"
    torch.save({"net.1.weight": torch.zeros(300, 64)}, wrong)  # an MLP's layer, not Conv-4's
    storage = tmp_path / "runs"
    assert main([*EP, "--set", "method.weight_init=pretrained", "--set", f"method.pretrained_path={wrong}",
                 "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: method.pretrained_path: mlp.pt does not fit model.name=conv4")
    assert err.count("\n") == 1 and not storage.exists()


def test_per_cycle_table_is_split_by_method_when_their_metrics_differ() -> None:
    import pandas as pd

    from orchestrator.results import per_group_text

    index = pd.MultiIndex.from_tuples([("imp", 1), ("imp", 3), ("soft_iep", 1)], names=["variant", "cycle"])
    summary = pd.DataFrame({"cycle/test_acc": [0.9, 0.8, 0.7], "cycle/threshold": [0.01, 0.02, None],
                            "cycle/dying_ratio": [None, None, 0.25]}, index=index)
    imp, iep = per_group_text(summary).split("\n\n")
    assert "cycle/threshold" in imp and "cycle/dying_ratio" not in imp and "0.02" in imp
    assert "cycle/dying_ratio" in iep and "cycle/threshold" not in iep and "0.25" in iep
    same = summary.fillna(0.5)  # every method logs every column: one table
    assert per_group_text(same) == same.to_string()


def test_the_default_sweep_is_the_cross_family_tour_at_one_density(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from search_spaces import get_space, make_plan

    assert main(["--dry-run", "--storage", str(tmp_path / "s")]) == 0  # no --space: the tour
    out = capsys.readouterr().out
    assert "tour" in out and all(v in out for v in ("dense", "ep", "soft_iep", "dst_rigl", "imp"))
    plan = make_plan(get_space("tour"), search="grid", sets={}, grid_overrides={}, num_samples=1)
    final_density = {"dense": lambda m: 1.0, "edge_popup": lambda m: 1 - m.prune_rate,
                     "iep": lambda m: (1 - m.shrinkage) ** m.cycles, "dst": lambda m: m.density,
                     "imp": lambda m: (1 - m.prune_fraction) ** (m.rounds - 1)}
    final = {}
    for point in plan.points():
        method = plan.resolve(point).method
        final[point["variant"]] = final_density[method.name](method)
    assert final.pop("dense") == 1.0
    assert set(final) == {"ep", "soft_iep", "dst_rigl", "imp"}
    assert all(abs(d - 0.8 ** 5) < 1e-3 for d in final.values()), final  # matched densities


def test_results_table_is_the_same_whatever_the_trial_order_and_ray_restarts() -> None:
    """A resumed sweep's table equals an uninterrupted one's: ties ordered by the swept keys,
    the machine (not Ray's node id, new after a restart) as `node`, no `replayed` column."""
    from types import SimpleNamespace

    from orchestrator.cluster.nodes import MACHINE_KEY, NODE_KEY
    from orchestrator.results import results_table, trial_frame
    from search_spaces import get_space, make_plan

    plan = make_plan(get_space("ep_quick"), search="grid", sets={}, grid_overrides={}, num_samples=1)
    rates = plan.grid["method.prune_rate"]

    def result(i: int, rate: float, node: str, machine: str, **extra: float) -> SimpleNamespace:
        config = {**plan.base, "method.prune_rate": rate}
        epochs = plan.resolve(config).total_epochs
        return SimpleNamespace(config=config, error=None, metrics={
            "trial_id": f"t{i}", "test_acc": 0.5, "epoch": epochs, NODE_KEY: node, MACHINE_KEY: machine, **extra})

    first = [result(i, r, "a1b2c3", "host") for i, r in enumerate(rates)]
    resumed = [result(i + 9, r, f"new{i}", "host", replayed=1.0) for i, r in reversed(list(enumerate(rates)))]
    tables = [results_table(rs, plan, "test_acc", "max") for rs in (first, resumed)]
    texts = [t.drop(columns="trial").to_csv(index=False) for t in tables]
    assert texts[0] == texts[1] and "node" not in tables[0]  # one machine: no node column
    assert list(tables[0]["method.prune_rate"]) == sorted(rates, key=str)  # all tied at 0.5
    assert "replayed" not in trial_frame(tables[1], resumed, plan)
    two = [result(0, rates[0], "n1", "head"), result(1, rates[1], "n2", "worker")]
    assert list(results_table(two, plan, "test_acc", "max")["node"]) == ["head", "worker"]
