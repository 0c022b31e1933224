"""Dying ratio (eq. 2) and Jaccard distance (appendix eq. 5) on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from trainables.metrics import dying_ratio, jaccard_distance


def test_dying_ratio_counts_over_all_layers() -> None:
    ever = {
        "a.weight": torch.tensor([True, False, False, False]),  # 3 of 4 never selected
        "b.weight": torch.tensor([[True, True, True, True], [True, True, True, False]]),  # 1 of 8
    }
    # Total 4 / 12 = 1/3; a mean of per-layer ratios would give (3/4 + 1/8) / 2 = 7/16.
    assert dying_ratio(ever) == pytest.approx(1 / 3, abs=1e-15)


def test_dying_ratio_extremes_and_errors() -> None:
    assert dying_ratio({"a": torch.ones(5, dtype=torch.bool)}) == 0.0
    assert dying_ratio({"a": torch.zeros(5, dtype=torch.bool)}) == 1.0
    with pytest.raises(ValueError):
        dying_ratio({})


def test_jaccard_hand_case() -> None:
    m1 = {"a": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "b": torch.tensor([1, 0], dtype=torch.bool)}
    m2 = {"a": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "b": torch.tensor([1, 0], dtype=torch.bool)}
    # Over both layers: |m1 ∧ m2| = 2 (a[0], b[0]); |m1 ∨ m2| = 4 (a[0], a[1], a[2], b[0]).
    assert jaccard_distance(m1, m2) == 0.5
    assert jaccard_distance(m1["a"], m2["a"]) == 1 - 1 / 3
    assert jaccard_distance(m1, m1) == 0.0
    assert jaccard_distance({"a": torch.zeros(3, dtype=torch.bool)},
                            {"a": torch.zeros(3, dtype=torch.bool)}) == 0.0
    with pytest.raises(ValueError):
        jaccard_distance(m1, {"a": m1["a"]})
