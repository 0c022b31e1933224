"""Iterative edge-popup (hard / soft, every rewinding variant), progressive EP, multicoats,
dense LR rewinding: each variant's defining property on a small net, through the engine."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from engine_tools import run_by_epoch

from trainables.config import ConfigError, ExperimentConfig
from trainables.keys import TIMING_KEYS
from trainables.loop import TrainState, build_state, load_checkpoint, start_cycle
from trainables.methods.base import Position
from trainables.optim import LRSchedule, lr_factor
from trainables.sparse.density import kept_count
from trainables.sparse.mask_io import read_masks
from trainables.sparse.schedules import (
    coat_prune_rates,
    iterative_prune_rates,
    progressive_prune_rates,
    shrinkage_for_target,
)
from trainables.sparse.supermask import SupermaskLinear, coat_mask, supermask_modules, topk_mask

BASE = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "32", "data.batch_size": 64,
        "run.max_steps_per_epoch": 3, "schedule.epochs": 2, "optim.lr": 0.5, "optim.momentum": 0.9,
        "method.name": "iep", "method.cycles": 3, "method.shrinkage": 0.3, "method.rank_sample": 20}


def cfg_of(**overrides: object) -> ExperimentConfig:
    """BASE with overrides (`method__cycles=2` sets method.cycles; a value of ... drops the key)."""
    flat = {**BASE, **{k.replace("__", "."): v for k, v in overrides.items()}}
    return ExperimentConfig.from_flat({k: v for k, v in flat.items() if v is not ...})


run = run_by_epoch


def cycle_masks(ckpt: Path, cycles: int) -> list[dict[str, torch.Tensor]]:
    return [read_masks(ckpt / "artifacts" / "masks" / f"cycle_{c:02d}.parquet") for c in range(1, cycles + 1)]


def state(ckpt: Path) -> dict:
    return torch.load(ckpt / "state.pt", weights_only=True)


# ----- formulas ------------------------------------------------------------------------------

def test_cycle_prune_rates_follow_the_formula() -> None:
    # k_i = 1 - (1 - p)^i: p = 0.2 -> .2, .36, .488, .5904 (Table 1's columns)
    assert iterative_prune_rates(0.2, 4) == (0.2, 0.36, 0.488, 0.5904)
    # with an initial rate m: k_i = 1 - (1 - m)(1 - p)^(i-1): m = .5, p = .2 -> .5, .6, .68
    assert iterative_prune_rates(0.2, 3, first=0.5) == (0.5, 0.6, 0.68)
    # 0.3 remaining in 3 cycles (ImageNet, §5): p = 1 - 0.3^(1/3)
    p = shrinkage_for_target(0.3, 3)
    assert p == pytest.approx(1 - 0.3 ** (1 / 3))
    assert iterative_prune_rates(p, 3)[-1] == pytest.approx(0.7)
    assert shrinkage_for_target(0.3, 3, first=0.5) == pytest.approx(1 - 0.6 ** 0.5)
    with pytest.raises(ValueError):
        shrinkage_for_target(0.6, 3, first=0.5)  # m = .5 already leaves less than .6


def test_rounded_rates_keep_the_decimal_count() -> None:
    # 1 - 0.8**2 = 0.3599999999999999 in binary; rounded it keeps 64 of 100, not 65
    k2 = iterative_prune_rates(0.2, 2)[1]
    assert k2 == 0.36 and kept_count(100, k2) == 64


def test_config_knows_the_cycles() -> None:
    cfg = cfg_of(method__cycles=4, method__shrinkage=0.2)
    assert cfg.method.cycle_prune_rates() == (0.2, 0.36, 0.488, 0.5904)
    assert cfg.total_epochs == 8
    assert cfg_of(method__shrinkage=None, method__target_remaining=0.3).method.cycle_prune_rates()[-1] \
        == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="set one of them"):
        cfg_of(method__target_remaining=0.3)  # shrinkage is set too
    lrr = cfg_of(method__name="dense_lrr", method__cycles=2, method__shrinkage=0.5, method__rank_sample=...)
    assert lrr.method.cycle_prune_rates() == (0.0, 0.5, 0.75) and lrr.total_epochs == 6


@pytest.mark.parametrize(("key", "value", "message"), [
    ("method.pruning", "medium", "method.pruning: 'medium' is not one of soft, hard"),
    ("method.score_reset", "random", "method.score_reset: 'random' is not one of inherit, rewind, reinit"),
    ("method.first_prune_rate", "1", "method.first_prune_rate: 1.0 must be < 1"),
    ("method.cycles", "1001", "method.cycles: 1001 must be <= 1000"),
])
def test_bad_family_values_name_key_and_allowed(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(**{key.replace(".", "__"): value})
    assert str(err.value).startswith(message)


def test_progressive_stage_rates() -> None:
    # exp: remaining (1 - k)^(s/C); k = .75, C = 2 -> remaining .5 then .25
    assert progressive_prune_rates(0.75, 2, "exp") == (0.5, 0.75)
    # lin: k s / C
    assert progressive_prune_rates(0.6, 3, "lin") == (0.2, 0.4, 0.6)
    assert progressive_prune_rates(0.6, 1, "exp") == (0.6,)


def test_coat_rates_span_linearly() -> None:
    # k = .4, N = 3: densities .6, .4, .2 -> k = .4, .6, .8
    assert coat_prune_rates(0.4, 3) == (0.4, 0.6, 0.8)
    assert coat_prune_rates(0.4, 1) == (0.4,)


# ----- multicoated supermask ---------------------------------------------------------------------

def test_multicoat_forward_is_sum_of_coat_masks_by_hand() -> None:
    layer = SupermaskLinear(4, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0]]))
        layer.scores.copy_(torch.tensor([[0.4, -0.1, 0.3, 0.2]]))  # |s| ranks: 0, 2, 3, 1
    layer.coat_rates = (0.25, 0.5, 0.75)  # keep 3, 2, 1 edges
    # coat 1: edges {0, 2, 3}; coat 2: {0, 2}; coat 3: {0} -> depth 3, 0, 2, 1
    expect_w = torch.tensor([[3 * 1.0, 0.0, 2 * 3.0, 1 * -4.0]])
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(layer(x), F.linear(x, expect_w))
    assert torch.equal(layer.current_mask(), torch.tensor([[True, False, True, True]]))
    # each coat passes the gradient straight through: N = 3 times ∂L/∂W ⊙ θ0 · sign(s)
    layer(x).sum().backward()
    expect_grad = 3 * x * layer.weight * torch.sign(layer.scores.detach())
    assert torch.allclose(layer.scores.grad, expect_grad)


def test_coat_mask_nests_under_ties() -> None:
    scores = torch.ones(10)
    depth = coat_mask(scores, (6, 4, 2))
    assert sorted(depth.tolist()) == [0] * 4 + [1] * 2 + [2] * 2 + [3] * 2


# ----- iterative EP through the engine -----------------------------------------------------------

def test_hard_iep_never_leaves_the_previous_mask_soft_can(tmp_path: Path) -> None:
    hard_cfg = cfg_of(method__pruning="hard")
    _, hard = run(hard_cfg, tmp_path / "hard")
    masks = cycle_masks(hard[6], 3)
    ever_cycle = {c: state(hard[2 * c])["method"]["ever_cycle"] for c in (2, 3)}
    for c in (2, 3):
        for name, prev in masks[c - 2].items():
            # every mask used in cycle c (its per-cycle history) lies inside m*_(c-1)
            assert not bool((ever_cycle[c][name] & ~prev).any()), (c, name)
            assert not bool((masks[c - 1][name] & ~prev).any())
    _, soft = run(cfg_of(), tmp_path / "soft")
    soft_masks = cycle_masks(soft[6], 3)
    escaped = sum(int((soft_masks[1][n] & ~soft_masks[0][n]).sum()) for n in soft_masks[0])
    assert escaped > 0  # soft pruning re-selected edges the previous cycle had dropped


def test_cycle_density_and_counts(tmp_path: Path) -> None:
    reports, ckpts = run(cfg_of(method__pruning="hard"), tmp_path)
    ends = [r for r in reports if "cycle/test_acc" in r]
    assert [r["epoch"] for r in ends] == [2, 4, 6] and [r["cycle"] for r in ends] == [1, 2, 3]
    rates = (0.3, 0.51, 0.657)
    for r, k, masks in zip(ends, rates, cycle_masks(ckpts[6], 3), strict=True):
        for m in masks.values():
            assert int(m.sum()) == kept_count(m.numel(), k)  # exact per layer
        total = sum(m.numel() for m in masks.values())
        assert r["cycle/density"] == sum(int(m.sum()) for m in masks.values()) / total
        assert r["cycle/dying_ratio"] >= r["cycle/dying_ratio_apparent"]
        assert r["cycle/dying_ratio_all_cycles"] <= r["cycle/dying_ratio"]
        assert "cycle/visits_0" not in r and "cycle/prune_rate" not in r  # logged once: dying ratio, density
        visited = sum(r[f"cycle/visits_{b}"] for b in ("1", "2", "3", "4", "5", "gt5"))
        # never visited in a training step = dying, except edges the very last update selected
        # (in the final mask, so not dying, but never used by a step): a few at most
        assert r["cycle/dying_ratio"] <= 1 - visited <= r["cycle/dying_ratio"] + 0.01
    # worst case = apparent + the edges removed before the cycle (§5)
    assert ends[1]["cycle/dying_ratio"] == pytest.approx(ends[1]["cycle/dying_ratio_apparent"] + 0.3, abs=0.01)
    ranks = pq.read_table(ckpts[6] / "artifacts/ranks/cycle_03.parquet").to_pylist()
    assert len(ranks) == 20 and all(r["selected"] == (r["rank"] < r["threshold"]) for r in ranks)


def fresh_state(cfg: ExperimentConfig) -> TrainState:
    """The engine's state at step 0, history started, as run_experiment builds it."""
    st = build_state(cfg, torch.device("cpu"), 3)
    st.method.on_train_start(st.model, Position(0, 0, 1, 3))
    return st


def layers_of(st: TrainState) -> dict:
    return supermask_modules(st.model)


def one_step(st: TrainState) -> None:
    """A real optimizer step on random data (momentum buffers become non-zero)."""
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    st.optimizer.zero_grad()
    F.cross_entropy(st.model(x), torch.arange(8) % 10).backward()
    st.optimizer.step()
    st.step += 1


@pytest.mark.parametrize("reset", ["rewind", "reinit"])
def test_srw_restarts_from_s0_and_sri_draws_new_scores(reset: str) -> None:
    st = fresh_state(cfg_of(method__score_reset=reset))
    initial = {n: m.scores.detach().clone() for n, m in layers_of(st).items()}
    one_step(st)
    start_cycle(st, 2)
    for name, layer in layers_of(st).items():
        same = torch.equal(layer.scores.detach(), initial[name])
        assert same if reset == "rewind" else not same, name
    if reset == "reinit":  # a fresh draw from the same init: same scale, another sample
        for layer in layers_of(st).values():
            bound = 1 / layer.scores.shape[1] ** 0.5
            assert float(layer.scores.detach().abs().max()) <= bound


def test_zero_init_zeroes_exactly_the_unselected_scores() -> None:
    for reset in ("inherit", "rewind"):
        st = fresh_state(cfg_of(method__zero_init=True, method__score_reset=reset))
        s0 = {n: m.scores.detach().clone() for n, m in layers_of(st).items()}
        one_step(st)
        trained = {n: m.scores.detach().clone() for n, m in layers_of(st).items()}
        prev = {n: m.current_mask().clone() for n, m in layers_of(st).items()}
        start_cycle(st, 2)
        for name, layer in layers_of(st).items():
            source = trained[name] if reset == "inherit" else s0[name]
            assert torch.equal(layer.scores.detach(), source * prev[name]), (reset, name)
            assert int((layer.scores.detach() == 0).sum()) >= int((~prev[name]).sum())


@pytest.mark.parametrize("lr_reset", ["rewind", "hold"])
def test_rewinding_resets_the_optimizer_state_and_ft_keeps_it(lr_reset: str) -> None:
    st = fresh_state(cfg_of(method__lr_reset=lr_reset))
    one_step(st)
    buffers = {id(p): s["momentum_buffer"].clone() for p, s in st.optimizer.state.items()}
    assert buffers and all(bool(b.abs().sum() > 0) for b in buffers.values())
    start_cycle(st, 2)
    if lr_reset == "rewind":
        assert len(st.optimizer.state) == 0
    else:
        kept = {id(p): s["momentum_buffer"] for p, s in st.optimizer.state.items()}
        assert kept.keys() == buffers.keys()
        assert all(torch.equal(kept[i], buffers[i]) for i in kept)
    assert st.cycle == 2


def test_lr_rewinding_restarts_the_schedule_and_ft_holds_it(tmp_path: Path) -> None:
    base = {"schedule.name": "cosine", "optim.lr": 0.1}
    rewind, _ = run(cfg_of(**{k.replace(".", "__"): v for k, v in base.items()}), tmp_path / "lr")
    hold, _ = run(cfg_of(method__lr_reset="hold", **{k.replace(".", "__"): v for k, v in base.items()}),
                  tmp_path / "ft")
    kw = dict(total_steps=6, warmup_steps=0, schedule="cosine")
    # LR after epoch 1 = f(3) (3 steps per epoch); the rewound cycle 2 ends epoch 3 at f(3) again
    assert [r["lr"] for r in rewind] == pytest.approx([0.1 * lr_factor(s, **kw) for s in (3, 6, 3, 6, 3, 6)])
    # FT holds the LR of cycle 1's last step, f(5), through cycles 2 and 3
    last = 0.1 * lr_factor(5, **kw)
    assert [r["lr"] for r in hold] == pytest.approx([0.1 * lr_factor(3, **kw), 0.1 * lr_factor(6, **kw),
                                                     last, last, last, last])
    assert last > 0


def test_lr_schedule_object_by_hand() -> None:
    s = LRSchedule(total_steps=10, warmup_steps=2, schedule="cosine")
    assert [s(i) for i in (0, 1, 6)] == pytest.approx([0.5, 1.0, 0.5])
    s.restart(10, lr="rewind")
    assert [s(10), s(11), s(16)] == pytest.approx([0.5, 1.0, 0.5])  # warm-up again from step 10
    s.restart(20, lr="rewind", offset=6)  # IMP-style rewind to schedule step 6
    assert s(20) == pytest.approx(0.5)
    s.restart(24, lr="hold")
    assert s(24) == s(100) == pytest.approx(lr_factor(9, total_steps=10, warmup_steps=2, schedule="cosine"))


@pytest.mark.parametrize("variant", [
    {"method__pruning": "hard", "method__score_reset": "reinit"},
    {"method__score_reset": "rewind", "method__zero_init": True},
    {"method__lr_reset": "hold", "method__coats": 2},
])
def test_resume_mid_cycle_and_at_a_boundary_is_bit_identical(tmp_path: Path, variant: dict) -> None:
    cfg = cfg_of(**variant)
    full, ckpts = run(cfg, tmp_path / "full")
    for at in (3, 4):  # epoch 3: mid cycle 2; epoch 4: cycle 2's end, cycle 3's boundary next
        resumed, rckpts = run(cfg, tmp_path / f"from{at}", resume=ckpts[at])
        assert [r["epoch"] for r in resumed] == list(range(at + 1, 7))
        for a, b in zip(full[at:], resumed, strict=True):
            assert {k: v for k, v in a.items() if k not in TIMING_KEYS} == \
                   {k: v for k, v in b.items() if k not in TIMING_KEYS}
        end_a, end_b = state(ckpts[6]), state(rckpts[6])
        for k in end_a["model"]:
            assert torch.equal(end_a["model"][k], end_b["model"][k]), k
        for c in (1, 2, 3):
            rel = f"artifacts/masks/cycle_{c:02d}.parquet"
            assert (ckpts[6] / rel).read_bytes() == (rckpts[6] / rel).read_bytes()


def test_soft_srw_cycle_is_ep_afresh_at_k_i(tmp_path: Path) -> None:
    """soft + score rewinding restarts from (θ0, s_0) at each k_i: EP per cycle (Table 3's EP row)."""
    cfg = cfg_of(method__score_reset="rewind", method__cycles=2)
    _, ckpts = run(cfg, tmp_path)
    blob = state(ckpts[2])
    assert blob["cycle"] == 1 and state(ckpts[4])["cycle"] == 2
    s0 = blob["method"]["initial_scores"]
    for name, layer in layers_of(fresh_state(cfg)).items():
        assert torch.equal(layer.scores.detach(), s0[name])


# ----- progressive EP ----------------------------------------------------------------------------

def test_progressive_ep_raises_k_per_stage(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_flat({**{k: v for k, v in BASE.items() if not k.startswith("method.")},
                                      "method.name": "edge_popup", "method.prune_rate": 0.75,
                                      "method.progressive_stages": 2, "schedule.epochs": 4})
    reports, ckpts = run(cfg, tmp_path)
    # 12 steps (epochs of 3) in 2 stages: k = .5 for steps 0-5 (epochs 1-2), .75 for steps 6-11
    assert [r["density"] for r in reports] == pytest.approx([0.5, 0.5, 0.25, 0.25], abs=0.01)
    assert [r["density"] for r in reports][-1] == pytest.approx(0.25, abs=0.01)
    final = read_masks(ckpts[4] / "masks.parquet")
    assert all(int(m.sum()) == kept_count(m.numel(), 0.75) for m in final.values())
    # resumed inside stage 1, the layers get stage 1's rate back before anything is recorded
    resumed, _ = run(cfg, tmp_path / "r", resume=ckpts[1])
    assert [r["dying_ratio"] for r in resumed] == [r["dying_ratio"] for r in reports[1:]]


# ----- dense LR rewinding --------------------------------------------------------------------------

def test_dense_lrr_prunes_by_global_magnitude_and_keeps_weights(tmp_path: Path) -> None:
    cfg = cfg_of(method__name="dense_lrr", method__cycles=2, method__shrinkage=0.5,
                 optim__weight_decay=0.01, optim__lr=0.05, method__rank_sample=...)
    reports, ckpts = run(cfg, tmp_path)
    ends = [r for r in reports if "cycle/density" in r]
    assert [r["cycle/density"] for r in ends] == pytest.approx([1.0, 0.5, 0.25], abs=1e-3)
    end1 = state(ckpts[2])["model"]
    weights = {k: v for k, v in end1.items() if k.endswith(".weight") and f"{k[:-7]}.mask" in end1}
    masks2 = cycle_masks(ckpts[4], 2)[1]
    # cycle 2's mask keeps exactly the largest half of cycle 1's weights, over all layers
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    keep = topk_mask(flat, kept_count(flat.numel(), 0.5))
    assert torch.equal(torch.cat([masks2[k].flatten() for k in weights]), keep)
    # survivors start cycle 2 from their trained values (no weight rewinding): checked on the
    # checkpoint after one epoch of cycle 2 against cycle 1's end via the pruned set
    mid = state(ckpts[3])["model"]
    for k in weights:
        assert torch.equal(mid[k][~masks2[k]], torch.zeros_like(mid[k][~masks2[k]]))  # exactly zero
        assert not torch.equal(mid[k][masks2[k]], end1[k][masks2[k]])  # and trained on
    assert ends[2]["cycle/density"] == pytest.approx(0.25, abs=1e-3)


def test_checkpoint_round_trip_restores_the_cycle(tmp_path: Path) -> None:
    cfg = cfg_of(method__pruning="hard")
    _, ckpts = run(cfg, tmp_path)
    st = build_state(cfg, torch.device("cpu"), 3)
    load_checkpoint(st, cfg, ckpts[4], torch.device("cpu"))
    assert st.cycle == 2 and st.epoch == 4 and st.step == 12
    assert sorted(st.artifacts) == [f"{kind}/cycle_{c:02d}.parquet" for kind in ("masks", "ranks", "visits")
                                    for c in (1, 2)]
    assert all(st.artifacts[k] == (ckpts[4] / "artifacts" / k).read_bytes() for k in st.artifacts)
    # the frozen search space of hard pruning travels in the model state
    assert all(torch.equal(layer.allowed, read_masks(ckpts[4] / "artifacts/masks/cycle_01.parquet")[name])
               for name, layer in layers_of(st).items())


# ----- pre-trained weights (appendix C.2.4) --------------------------------------------------------

def test_iep_on_pretrained_weights_freezes_exactly_them(tmp_path: Path) -> None:
    """A dense run's checkpoint becomes θ0 of soft iEP, bit for bit, and stays frozen."""
    dense = ExperimentConfig.from_flat({**{k: v for k, v in BASE.items() if not k.startswith("method.")},
                                        "method.name": "dense", "schedule.epochs": 1, "optim.lr": 0.05})
    _, ckpts = run(dense, tmp_path / "dense")
    trained = state(ckpts[1])["model"]
    cfg = cfg_of(method__weight_init="pretrained", method__pretrained_path=str(ckpts[1] / "state.pt"),
                 method__cycles=2)
    st = fresh_state(cfg)
    for name, layer in layers_of(st).items():
        assert torch.equal(layer.weight, trained[name])
    _, iep = run(cfg, tmp_path / "iep")
    final = state(iep[4])["model"]
    for name in layers_of(st):
        assert torch.equal(final[name], trained[name])  # weights never train in edge-popup
