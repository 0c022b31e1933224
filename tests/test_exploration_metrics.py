"""Exploration metrics of the strong-lottery paper on hand-computed masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from trainables.config import ExperimentConfig
from trainables.loop import run_experiment
from trainables.metrics import (
    apparent_dying_ratio,
    dying_neurons,
    dying_ratio,
    jaccard_by_cycle,
    jaccard_distance,
    jaccard_distance_chance,
    jaccard_index_chance,
    mask_files,
    normalized_ranks,
    rank_table,
    sample_edges,
    second_last_pair,
    shared_mask_ratio,
    shared_ratio_by_epoch,
    shared_ratio_chance,
    visit_histogram,
    visit_ratio,
)

T, F = True, False


def test_apparent_and_worst_case_dying_ratio_by_hand() -> None:
    # 8 edges; the search space (previous mask) holds 5; 3 of them selected this cycle
    ever = {"a": torch.tensor([T, T, T, F, F, F, F, F])}
    allowed = {"a": torch.tensor([T, T, T, T, T, F, F, F])}
    assert apparent_dying_ratio(ever, allowed) == 2 / 8  # edges 3, 4: in the space, never chosen
    assert dying_ratio(ever) == 5 / 8  # worst case: the 3 removed edges count too
    # a layer without a frozen space counts like the plain ratio
    assert apparent_dying_ratio({"b": torch.tensor([T, F])}, {}) == 0.5


def test_jaccard_chance_by_hand_and_by_simulation() -> None:
    assert jaccard_index_chance(0.5) == pytest.approx(1 / 3)  # .25 / (1 - .25)
    assert jaccard_index_chance(1.0) == 1.0
    assert jaccard_distance_chance(0.1) == pytest.approx(1 - 0.01 / 0.19)
    g = torch.Generator().manual_seed(0)
    n, d = 200_000, 0.2
    a = torch.rand(n, generator=g) < d
    b = torch.rand(n, generator=g) < d
    assert jaccard_distance(a, b) == pytest.approx(jaccard_distance_chance(d), abs=0.01)
    with pytest.raises(ValueError):
        jaccard_index_chance(0.0)


def test_shared_ratio_and_its_chance() -> None:
    a = {"x": torch.tensor([T, T, F, F]), "y": torch.tensor([[T, F]])}
    b = {"x": torch.tensor([T, F, F, T]), "y": torch.tensor([[T, T]])}
    assert shared_mask_ratio(a, b) == 3 / 6  # agree at x0, x2, y0
    assert shared_ratio_chance(0.2) == pytest.approx(0.68)  # appendix A.3's 0.68
    g = torch.Generator().manual_seed(1)
    k = 0.3
    m1, m2 = torch.rand(100_000, generator=g) >= k, torch.rand(100_000, generator=g) >= k
    assert shared_mask_ratio(m1, m2) == pytest.approx(shared_ratio_chance(k), abs=0.01)


def test_visit_buckets() -> None:
    counts = {"a": torch.tensor([0, 0, 1, 2, 5, 6, 40], dtype=torch.int32),
              "b": torch.tensor([[3, 4], [0, 7]], dtype=torch.int32)}
    hist = visit_histogram(counts)
    assert hist == {"0": 3, "1": 1, "2": 1, "3": 1, "4": 1, "5": 1, "gt5": 3}
    ratio = visit_ratio(hist, {"0": 1, "1": 2, "2": 1, "3": 1, "4": 1, "5": 1, "gt5": 0})
    assert ratio["0"] == 3 and ratio["1"] == 0.5 and ratio["gt5"] == float("inf")
    with pytest.raises(TypeError):
        visit_histogram(torch.zeros(3))


def test_saturated_visit_counts_give_the_unbounded_buckets() -> None:
    """uint8 counts capped at VISIT_CAP (1 byte per edge) = int32 counts in every bucket, also
    past 255 steps (no wrap-around); an edge selected every step sits at the cap."""
    from trainables.metrics.visits import VISIT_CAP, add_visit

    g = torch.Generator().manual_seed(1)
    n = 5000
    p = torch.rand(n, generator=g) * 0.03  # per-edge chance: counts from 0 to ~15 over 300 steps
    p[:10] = 1.0
    exact = torch.zeros(n, dtype=torch.int32)
    saturated = torch.zeros(n, dtype=torch.uint8)
    for step in range(300):
        mask = torch.rand(n, generator=g) < p
        exact += mask
        add_visit(saturated, mask)
        if step in (5, 50, 299):
            assert visit_histogram(saturated) == visit_histogram(exact)
    assert int(saturated.max()) == VISIT_CAP and bool((saturated[:10] == VISIT_CAP).all())
    assert torch.equal(saturated.long(), exact.clamp(max=VISIT_CAP).long())
    assert all(visit_histogram(exact)[b] > 0 for b in ("0", "1", "5", "gt5"))
    with pytest.raises(TypeError):
        add_visit(exact, mask)


def test_dying_neurons_by_hand() -> None:
    # producer (4 neurons x 3 inputs): neurons 1 and 3 receive no edge
    producer = torch.tensor([[T, F, F], [F, F, F], [F, T, T], [F, F, F]])
    # consumer (2 classes x 4 neurons): neurons 0 and 3 feed nothing
    consumer = torch.tensor([[F, T, T, F], [F, F, T, F]])
    out = dying_neurons(producer, consumer)
    assert out == {"no_input": 2.0, "no_output": 2.0, "both": 1.0, "overlap": 0.5}
    # a conv producer: a neuron is an output channel, its row every (input, kernel) entry
    conv = torch.zeros(4, 2, 3, 3, dtype=torch.bool)
    conv[0, 1, 2, 2] = True
    assert dying_neurons(conv, consumer)["no_input"] == 3.0
    with pytest.raises(ValueError, match="outputs"):
        dying_neurons(producer, torch.ones(2, 5, dtype=torch.bool))


def test_second_last_pair_follows_model_order() -> None:
    masks = {"conv": torch.ones(8, 3, 3, 3, dtype=torch.bool), "fc1": torch.ones(4, 8, dtype=torch.bool),
             "fc2": torch.ones(10, 4, dtype=torch.bool)}
    assert second_last_pair(masks) == ("fc1", "fc2")
    assert second_last_pair({"conv": masks["conv"], "fc": torch.ones(10, 72, dtype=torch.bool)}) is None


def test_ranks_by_hand() -> None:
    key = torch.tensor([0.5, 0.1, 0.9, 0.3])  # order from the top: 2, 0, 3, 1
    assert normalized_ranks(key, torch.tensor([2, 0, 3, 1])).tolist() == [0.0, 0.25, 0.5, 0.75]
    mask = torch.tensor([T, F, T, F])
    table = rank_table(4, [("l", 1), ("l", 2)], {"l": key}, {"l": mask}).to_pylist()
    assert [(r["edge"], r["index"], r["rank"], r["selected"], r["threshold"]) for r in table] == \
        [(0, 1, 0.75, False, 0.5), (1, 2, 0.0, True, 0.5)]
    assert all(r["cycle"] == 4 for r in table)


def test_edge_sample_is_uniform_over_layers_and_seeded() -> None:
    sizes = {"a": 10, "b": 30}
    s1 = sample_edges(sizes, 40, torch.Generator().manual_seed(0))
    assert sorted(s1) == [("a", i) for i in range(10)] + [("b", i) for i in range(30)]
    s2 = sample_edges(sizes, 5, torch.Generator().manual_seed(3))
    assert s2 == sample_edges(sizes, 5, torch.Generator().manual_seed(3))
    assert all(0 <= i < sizes[layer] for layer, i in s2)


def test_masks_over_training_and_across_runs(tmp_path: Path) -> None:
    """Two EP runs from one init (run.seed) with another data order agree less than 100% but
    more than chance (A.3, Fig. 8); the same data order agrees exactly; cycle 1 of soft iEP and
    of EP-per-cycle are one run, later cycles differ (Fig. 15)."""
    base = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "32", "data.batch_size": 64,
            "run.max_steps_per_epoch": 6, "schedule.epochs": 3, "optim.lr": 1.0, "method.prune_rate": 0.2,
            "run.masks_every": 1}
    dirs = {}
    for name, extra in (("a", {"run.data_seed": 1}), ("b", {"run.data_seed": 2}), ("c", {"run.data_seed": 1})):
        dirs[name] = _artifacts(ExperimentConfig.from_flat({**base, **extra}), tmp_path / name)
    assert sorted(mask_files(dirs["a"], "epoch")) == [1, 2, 3]
    ab = shared_ratio_by_epoch(dirs["a"], dirs["b"])
    assert [r["epoch"] for r in ab] == [1, 2, 3]
    assert all(r["chance"] == pytest.approx(0.68, abs=0.01) for r in ab)  # k = .2
    assert all(r["chance"] < r["shared_ratio"] < 1 for r in ab)
    assert all(r["shared_ratio"] == 1 for r in shared_ratio_by_epoch(dirs["a"], dirs["c"]))

    iep = {k: v for k, v in base.items() if k not in ("method.prune_rate", "run.masks_every")}
    iep.update({"method.name": "iep", "method.cycles": 2, "method.shrinkage": 0.3})
    soft = _artifacts(ExperimentConfig.from_flat(iep), tmp_path / "soft")
    ep = _artifacts(ExperimentConfig.from_flat({**iep, "method.score_reset": "rewind"}), tmp_path / "ep")
    rows = jaccard_by_cycle(soft, ep)
    assert [r["cycle"] for r in rows] == [1, 2]
    assert rows[0]["jaccard_distance"] == 0.0 and rows[1]["jaccard_distance"] > 0
    assert rows[1]["remaining_ratio"] == pytest.approx(0.49, abs=0.01)
    assert rows[1]["chance"] == pytest.approx(jaccard_distance_chance(rows[1]["remaining_ratio"]))


def _artifacts(cfg: ExperimentConfig, tmp: Path) -> Path:
    """Train cfg; return the artifacts folder of its last checkpoint (what MLflow receives)."""
    kept: list[Path] = []

    def reporter(metrics: dict, ckpt: Path | None) -> None:
        if ckpt is not None:
            kept.clear()
            dest = tmp / f"ckpt{metrics['epoch']}"
            shutil.copytree(ckpt, dest)
            kept.append(dest)

    run_experiment(cfg, reporter=reporter)
    return kept[0] / "artifacts"
