"""Bit-packed histories: exact round trip at every density (empty and full included), OR, counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.metrics.dying import dying_ratio
from trainables.sparse.bits import PackedBits, pack_bits, unpack_bits


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 65, 20_011])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.05, 0.2, 0.3, 0.5, 0.99, 1.0])
def test_round_trip_at_every_density(n: int, density: float) -> None:
    g = torch.Generator().manual_seed(n)
    mask = torch.rand(n, generator=g) < density if 0 < density < 1 else torch.full((n,), bool(density))
    bits = PackedBits.of(mask.view(n, 1))
    assert bits.nbytes == (n + 7) // 8  # one bit per weight (plus the last byte's padding)
    assert torch.equal(bits.unpack(), mask.view(n, 1))
    assert bits.count() == int(mask.sum())
    # the layout is numpy's little-endian packbits
    assert np.array_equal(pack_bits(mask).numpy(), np.packbits(mask.numpy(), bitorder="little"))


def test_or_matches_logical_or_and_dying_ratio_is_unchanged() -> None:
    g = torch.Generator().manual_seed(0)
    shape = (5, 3, 3, 3)
    ref = torch.rand(shape, generator=g) < 0.3
    bits = PackedBits.of(ref)
    for _ in range(6):
        m = torch.rand(shape, generator=g) < 0.3
        ref.logical_or_(m)
        bits.or_(m)
        assert torch.equal(bits.unpack(), ref)
    other = torch.rand(7, 11, generator=g) < 0.5
    assert dying_ratio({"a": bits, "b": PackedBits.of(other)}) == dying_ratio({"a": ref, "b": other})
    assert bits.zero_().count() == 0


def test_refuses_wrong_sizes() -> None:
    with pytest.raises(ValueError, match="must be 2 uint8"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), (9,))
    with pytest.raises(ValueError, match="shape"):
        PackedBits.of(torch.zeros(9, dtype=torch.bool)).or_(torch.zeros(3, 3, dtype=torch.bool))


def test_record_masks_keeps_dst_history_packed() -> None:
    """DST's ever-active history: packed from the first mask, an old bool entry packed on the next OR."""
    from trainables.metrics.itop import itop_ratio, record_masks

    ever: dict = {"old": torch.tensor([True, False, False, False])}
    record_masks(ever, {"new": torch.tensor([False, True, False]), "old": torch.tensor([False, True, False, False])})
    assert all(isinstance(v, PackedBits) for v in ever.values())
    assert torch.equal(ever["old"].unpack(), torch.tensor([True, True, False, False]))
    assert itop_ratio(ever) == 1 - 4 / 7  # 4 of 7 weights never active
