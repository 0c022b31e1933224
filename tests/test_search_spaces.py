"""Named spaces: the paper's grids, CLI pinning, and validation of every trial up front."""

from __future__ import annotations

import pytest

from search_spaces import REGISTRY, get_space, make_plan
from search_spaces.edge_popup import TABLE1_PRUNE_RATES, TABLE4_VARIANTS
from trainables.config import ConfigError

LOCAL = {"data.dataset": "digits", "model.name": "conv4"}
LOCAL_IMP = {"data.batch_size": 128}


def test_table1_prune_rates_match_the_paper() -> None:
    # Table 1 header: .200 .360 .488 .590 .672 .738 .790 .832
    assert [round(k, 3) for k in TABLE1_PRUNE_RATES] == [.2, .36, .488, .59, .672, .738, .79, .832]


def test_table4_is_one_change_per_row() -> None:
    assert TABLE4_VARIANTS["baseline"] == {}
    assert all(len(v) == 1 for name, v in TABLE4_VARIANTS.items() if name != "baseline")
    assert len(TABLE4_VARIANTS) == 14  # baseline + 3 bs + 3 lr + 2 wd + lars + score + weight + 2 warm-up


def test_every_space_plans_as_grid_and_optuna_on_local_data() -> None:
    for space in REGISTRY.values():
        varied = {k for v in space.variants.values() for k in v}  # e.g. architectures as variants
        # IMP's batch sizes (up to 2048) exceed digits' 1437 training images: pin one that fits
        local = {k: v for k, v in {**LOCAL, **(LOCAL_IMP if space.name.startswith("imp_") else {})}.items()
                 if k not in varied}
        grid = make_plan(space, search="grid", sets=local if space.name != "ep_hparams" else
                         {**local, "schedule.epochs": 20}, grid_overrides={}, num_samples=1)
        assert len(grid.points()) >= 1
        opt = make_plan(space, search="optuna", sets={**local, "schedule.epochs": 20}, grid_overrides={},
                        num_samples=5)
        assert opt.num_samples == 5 and opt.optuna_space


def test_set_pins_a_grid_axis_and_types_values() -> None:
    plan = make_plan(get_space("ep_quick"), search="grid", sets={"method.prune_rate": "0.5"},
                     grid_overrides={}, num_samples=1)
    assert plan.points() == [{**plan.base}]
    assert plan.base["method.prune_rate"] == 0.5


def test_num_samples_adds_seed_axis() -> None:
    plan = make_plan(get_space("ep_quick"), search="grid", sets={}, grid_overrides={}, num_samples=3)
    seeds = sorted({p["run.seed"] for p in plan.points()})
    assert seeds == [0, 1, 2] and len(plan.points()) == 9


def test_variants_cross_the_grid() -> None:
    plan = make_plan(get_space("ep_hparams"), search="grid", sets={**LOCAL, "schedule.epochs": 20},
                     grid_overrides={}, num_samples=1)
    # model.name and data.dataset were pinned by --set, leaving the 14 rows of Table 4
    assert len(plan.points()) == 14
    cfg = plan.resolve(next(p for p in plan.points() if p["variant"] == "optimizer=lars"))
    assert cfg.optim.name == "lars" and cfg.method.prune_rate == 0.7


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"search": "random"}, "--search: 'random' is not one of grid, optuna"),
    ({"grid_overrides": {"optim.lrr": ["1"]}}, "unknown config key 'optim.lrr'"),
    ({"grid_overrides": {"method.prune_rate": ["1.5"]}}, r"method.prune_rate: 1.5 must be < 1"),
    ({"sets": {"schedule.epochs": "0"}}, "schedule.epochs: 0 must be >= 1"),
    ({"num_samples": 0}, "--num-samples: 0 must be >= 1"),
])
def test_bad_plans_raise(kwargs: dict, pattern: str) -> None:
    args = {"search": "grid", "sets": {}, "grid_overrides": {}, "num_samples": 1, **kwargs}
    with pytest.raises(ConfigError, match=pattern):
        make_plan(get_space("ep_quick"), **args)


def test_set_conflicting_with_a_variant_is_refused() -> None:
    with pytest.raises(ConfigError, match="varies this key in its variants"):
        make_plan(get_space("ep_hparams"), search="grid", sets={**LOCAL, "optim.lr": "0.3"},
                  grid_overrides={}, num_samples=1)


def test_unknown_space() -> None:
    with pytest.raises(ConfigError, match="--space: 'nope' is not one of ep_quick"):
        get_space("nope")
