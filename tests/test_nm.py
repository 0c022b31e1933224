"""N:M masks: hand-computed selections, the count rules, refusals, and every family's masks
holding exactly N per group of M after every step, update and round (property tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_tools import run_collecting
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.config import ConfigError, ExperimentConfig
from trainables.methods.dst import DST
from trainables.methods.edge_popup import EdgePopup, supermask_layers
from trainables.methods.imp import Imp
from trainables.sparse.masked import masked_modules
from trainables.sparse.nm import (
    group_counts,
    grow_in_groups,
    is_nm,
    layer_patterns,
    nm_nested,
    nm_topk,
)
from trainables.sparse.nm_fit import misfit_problem
from trainables.sparse.nm_pattern import NM, group_keep, imp_round_keep, parse_pattern

# --- hand-computed selections --------------------------------------------------------------


def test_nm_topk_keeps_the_n_largest_of_each_group_of_m() -> None:
    key = torch.tensor([[0.1, 0.9, 0.5, 0.3, 7.0, 1.0, 2.0, 3.0]])
    # groups (0.1, 0.9, 0.5, 0.3) and (7, 1, 2, 3): 2:4 keeps 0.9, 0.5 and 7, 3
    assert nm_topk(key, 2, 4).tolist() == [[False, True, True, False, True, False, False, True]]
    # 1:4: 0.9 and 7
    assert nm_topk(key, 1, 4).tolist() == [[False, True, False, False, True, False, False, False]]


def test_conv_groups_run_along_the_flattened_input_dimension() -> None:
    # (out=1, c=2, kh=1, kw=2): the row is c0k0, c0k1, c1k0, c1k1 -> one group of 4
    key = torch.tensor([4.0, 1.0, 3.0, 2.0]).view(1, 2, 1, 2)
    assert nm_topk(key, 2, 4).flatten().tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="input dimension 3"):
        nm_topk(torch.ones(2, 3, 1, 1), 1, 2)


def test_nested_coats_pick_inside_the_coarser_coat_per_group() -> None:
    key = torch.tensor([[0.4, 0.1, 0.3, 0.2, 0.5, 0.6, 0.8, 0.7]])
    # coat 1 keeps 3 per group, coat 2 keeps 1 inside it: group 1 depth 2 at 0.4, 1 at 0.3, 0.2
    assert nm_nested(key, (3, 1), 4).tolist() == [[2.0, 0.0, 1.0, 1.0, 0.0, 1.0, 2.0, 1.0]]


def test_grow_in_groups_regrows_the_best_inactive_of_the_same_group() -> None:
    key = torch.tensor([[5.0, 1.0, 2.0, 3.0, 9.0, 8.0, 0.0, 0.5]])
    inactive = torch.tensor([[False, True, True, True, True, True, False, True]])
    need = torch.tensor([1, 2])
    # group 1: best inactive is 3.0 (index 3); group 2: 9.0 and 8.0 (index 4, 5), not the active 0.0
    assert grow_in_groups(key, inactive, need, 4).nonzero()[:, 1].tolist() == [3, 4, 5]


def test_group_keep_and_the_imp_schedule() -> None:
    nm = NM(2, 4)
    assert group_keep(nm, 0.0) == 4 and group_keep(nm, 0.25) == 3 and group_keep(nm, 0.5) == 2
    assert group_keep(nm, 0.49999999) == 2  # float noise around N/M gives exactly N
    assert group_keep(nm, 0.9) == 2  # never below N
    # p = 0.2, 5 rounds: remaining 1, .8, .64, .512, then N. 4-floor(.2*4)=4, 4-floor(.36*4)=3, 4-floor(.488*4)=3
    assert [imp_round_keep(nm, 0.2, r, 5) for r in range(1, 6)] == [4, 4, 3, 3, 2]
    assert [imp_round_keep(nm, 0.5, r, 3) for r in range(1, 4)] == [4, 2, 2]


# --- property tests of the primitives ----------------------------------------------------------

@st.composite
def _nm_case(draw: st.DrawFn) -> tuple[torch.Tensor, int, int]:
    m = draw(st.integers(2, 8))
    n = draw(st.integers(1, m - 1))
    rows, groups = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31))
    ties = draw(st.booleans())
    key = torch.rand(rows, groups * m, generator=torch.Generator().manual_seed(seed))
    if ties:
        key = (key * 3).round()  # many equal keys
    return key, n, m


@settings(max_examples=60, deadline=None)
@given(_nm_case())
def test_every_primitive_gives_exactly_n_per_group(case: tuple[torch.Tensor, int, int]) -> None:
    key, n, m = case
    mask = nm_topk(key, n, m)
    assert is_nm(mask, n, m)
    kept_min = torch.where(mask, key, torch.inf).view(-1, m).min(1).values
    dropped_max = torch.where(mask, -torch.inf, key).view(-1, m).max(1).values
    assert bool((kept_min >= dropped_max).all())  # the kept are the group's largest
    depth = nm_nested(key, (n, max(n - 1, 0)), m)
    assert is_nm(depth > 0, n, m) and bool((group_counts(depth >= 2, m) == max(n - 1, 0)).all())
    # prune one active per group at random, regrow within the group: N again
    pruned = nm_topk(torch.rand(key.shape, generator=torch.Generator().manual_seed(1)) * mask, 1, m) & mask
    kept = mask & ~pruned
    grown = grow_in_groups(key, ~kept, group_counts(pruned, m), m)
    assert is_nm(kept | grown, n, m) and not bool((grown & kept).any())


# --- validation ---------------------------------------------------------------------------

BASE = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "48,32"}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"sparsity.pattern": "4:4"}, "needs 0 < N < M"),
    ({"sparsity.pattern": "2-4"}, "is not unstructured, or N:M"),
    ({"sparsity.pattern": "0:4"}, "needs 0 < N < M"),
    ({"sparsity.pattern": "2:4", "method.prune_rate": 0.8}, "method.prune_rate: 0.8"),
    ({"sparsity.pattern": "2:4", "method.name": "dst", "method.density": 0.5}, "method.distribution: erk"),
    ({"sparsity.pattern": "2:4", "method.name": "dst", "method.density": 0.5, "method.distribution": "er"},
     "method.distribution: er "),
    ({"sparsity.pattern": "2:4", "method.name": "dst", "method.distribution": "uniform"}, "method.density: 0.2"),
    ({"sparsity.pattern": "2:4", "method.name": "imp", "method.rounds": 2, "method.one_shot_sparsity": 0.5},
     "method.one_shot_sparsity"),
    ({"sparsity.pattern": "2:4", "method.name": "dense"}, "trains no N:M mask"),
    ({"sparsity.pattern": "2:4", "method.name": "iep", "method.cycles": 3}, "method.target_remaining"),
])
def test_bad_patterns_and_combinations_are_refused_in_one_line(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        ExperimentConfig.from_flat({**BASE, **overrides})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_m_must_divide_every_masked_layers_input_dimension() -> None:
    conv = ExperimentConfig.from_flat({"data.dataset": "digits", "model.name": "conv2", "sparsity.pattern": "2:4"})
    problem = misfit_problem(conv)  # the first conv: 1 channel x 3 x 3 = 9 inputs
    assert problem is not None and "input dimension of every masked layer" in problem and "has 9" in problem
    assert misfit_problem(ExperimentConfig.from_flat({**BASE, "sparsity.pattern": "2:4"})) is None
    relaxed = ExperimentConfig.from_flat({"data.dataset": "digits", "model.name": "conv2",
                                          "sparsity.pattern": "2:4", "sparsity.misfit": "unstructured"})
    assert misfit_problem(relaxed) is None
    pats = layer_patterns({"a": (8, 9), "b": (8, 16)}, "2:4", "unstructured")
    assert pats == {"a": None, "b": NM(2, 4)}
    assert parse_pattern(" 2 : 4 ") == NM(2, 4) and parse_pattern("unstructured") is None


# --- every family, through the engine: exactly N per group after every step, update, round ------

RUN = {**BASE, "data.batch_size": 64, "schedule.epochs": 2, "run.max_steps_per_epoch": 4,
       "optim.lr": 0.05, "sparsity.pattern": "2:4"}


def _assert_nm(masks: dict[str, torch.Tensor], counts: list[int], n: int = 2) -> None:
    assert masks
    for mask in masks.values():
        assert is_nm(mask, n, 4)
    counts.append(len(masks))


@pytest.mark.parametrize("extra", [
    {"method.name": "edge_popup", "method.prune_rate": 0.5},
    {"method.name": "edge_popup", "method.prune_rate": 0.5, "method.coats": 2},
    {"method.name": "iep", "method.cycles": 2, "method.target_remaining": 0.5, "method.pruning": "hard"},
])
def test_supermask_masks_are_n_m_after_every_step(extra: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[int] = []
    orig = EdgePopup.after_step

    def after_step(self: EdgePopup, model: torch.nn.Module, ctx: object) -> None:
        orig(self, model, ctx)
        layers = supermask_layers(model)
        nm = next(iter(layers.values())).nm
        assert nm is not None
        keep = group_keep(nm, next(iter(layers.values())).prune_rate)
        _assert_nm({n: layer.current_mask() for n, layer in layers.items()}, checked, keep)
        for layer in layers.values():
            if len(layer.coat_rates) > 1:  # the finer coat is N':M inside the coarser one
                assert bool((group_counts(layer.coat_depth() >= 2, 4) == group_keep(nm, layer.coat_rates[1])).all())

    monkeypatch.setattr(EdgePopup, "after_step", after_step)
    reports, _ = run_collecting(ExperimentConfig.from_flat({**RUN, **extra}), tmp_path)
    assert len(checked) >= 8 and reports[-1]["density"] == pytest.approx(0.5)


@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_dst_masks_are_n_m_after_every_update_and_step(growth: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[int] = []
    updates: list[int] = []
    orig_update, orig_step = DST.before_optimizer_step, DST.after_step

    def before_optimizer_step(self: DST, model: torch.nn.Module, ctx: object) -> bool:
        before = {n: m.mask.clone() for n, m in masked_modules(model).items()}
        out = orig_update(self, model, ctx)
        after = {n: m.mask.clone() for n, m in masked_modules(model).items()}
        if any(not torch.equal(before[n], after[n]) for n in before):
            updates.append(1)
        _assert_nm(after, checked)
        return out

    def after_step(self: DST, model: torch.nn.Module, ctx: object) -> None:
        orig_step(self, model, ctx)
        _assert_nm({n: m.mask for n, m in masked_modules(model).items()}, checked)

    monkeypatch.setattr(DST, "before_optimizer_step", before_optimizer_step)
    monkeypatch.setattr(DST, "after_step", after_step)
    cfg = ExperimentConfig.from_flat({**RUN, "method.name": "dst", "method.density": 0.5,
                                      "method.distribution": "uniform", "method.update_period": 2,
                                      "method.growth": growth})
    run_collecting(cfg, tmp_path)
    assert updates and len(checked) >= 16  # the topology did move, and stayed N:M


def test_imp_masks_reach_n_m_at_the_last_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[int]] = []
    orig = Imp._prune

    def prune(self: Imp, model: torch.nn.Module, r: int) -> None:
        orig(self, model, r)
        masks = {n: m.mask for n, m in self.prunable(model).items()}
        keep = imp_round_keep(NM(2, 4), self.method_cfg.prune_fraction, r, self.method_cfg.rounds)
        seen.append([keep])
        _assert_nm(masks, [], keep)

    monkeypatch.setattr(Imp, "_prune", prune)
    cfg = ExperimentConfig.from_flat({**RUN, "method.name": "imp", "method.rounds": 4, "method.prune_fraction": 0.2,
                                      "schedule.epochs": 1, "method.reinit_baseline": False})
    reports, _ = run_collecting(cfg, tmp_path)
    assert seen == [[4], [3], [2]]  # remaining .8 -> 4 per group, .64 -> 3, last round -> N
    assert reports[-1]["density"] == pytest.approx(0.5)


# --- N:M mask coding -------------------------------------------------------------------------

def test_nm_code_hand_case_and_entropy_bound() -> None:
    import math

    from trainables.sparse.nm_code import nm_decode, nm_encode, words_per_chunk

    # 2:4 patterns by value: 0011=0, 0101=1, 0110=2, 1001=3, 1010=4, 1100=5; [1,1,0,0] is index 5
    assert words_per_chunk(2, 4) == (17, 44)  # 6^17 < 2^44: 0.647 bits per weight
    raw = nm_encode(np.array([1, 1, 0, 0], dtype=bool), 2, 4)
    assert raw == bytes([0, 0, 0, 0, 0, 0x50])  # 44 bits, big-endian: the digit 5 in the last 4
    assert nm_decode(raw, 4, 2, 4).tolist() == [True, True, False, False]
    for n, m in ((2, 4), (1, 4), (4, 8), (2, 8), (8, 16)):
        g, b = words_per_chunk(n, m)
        assert b / g / m <= math.log2(math.comb(m, n)) / m * 1.01


@settings(max_examples=40, deadline=None)
@given(_nm_case())
def test_nm_masks_round_trip_through_the_mask_file(case: tuple[torch.Tensor, int, int]) -> None:
    from trainables.sparse.mask_io import masks_table, read_masks, write_masks

    key, n, m = case
    mask = nm_topk(key, n, m)
    table = masks_table({"w": mask})
    if mask.numel() >= 2 * m:  # (a single group is not told apart from any mask of its density)
        assert table.column("encoding")[0].as_py().startswith("nm")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_masks(Path(tmp) / "m.parquet", {"w": mask, "dense": torch.ones(3, 5, dtype=torch.bool)})
        back = read_masks(Path(tmp) / "m.parquet")
    assert torch.equal(back["w"], mask) and bool(back["dense"].all())
