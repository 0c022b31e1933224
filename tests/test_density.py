"""kept_count and the density conversions, on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from trainables.sparse.density import (
    density,
    kept_count,
    prune_rate_from_density,
    pruned_count,
    sparsity,
)


@pytest.mark.parametrize(
    ("n", "k", "kept"),
    [
        (10, 0.2, 8),
        (100, 0.29, 71),  # float 0.29 * 100 = 28.999999999999996: a float floor would keep 72
        (7, 0.5, 4),  # ceil(3.5)
        (13, 0.0, 13),
        (0, 0.5, 0),
        (1000, 0.999, 1),
        (3, 0.7, 1),  # floor(2.1) = 2 pruned
        (100, 0.57, 43),  # 0.57 * 100 = 56.99999999999999 in floats
    ],
)
def test_kept_count_exact(n: int, k: float, kept: int) -> None:
    assert kept_count(n, k) == kept
    assert pruned_count(n, k) == n - kept


def test_kept_count_equals_ceil_of_density() -> None:
    for n in (1, 7, 64, 101, 4608):
        for k in (0.1, 0.2, 0.29, 0.3, 0.5, 0.7, 0.832, 0.9):
            expected = math.ceil(round((1 - k) * n, 9))
            assert kept_count(n, k) == expected, (n, k)


def test_conversions() -> None:
    assert density(0.29) == 0.71
    assert density(0.0) == 1.0
    assert sparsity(0.71) == 0.29
    assert prune_rate_from_density(0.3) == 0.7


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError):
        kept_count(10, bad)
    with pytest.raises(ValueError):
        density(bad)
