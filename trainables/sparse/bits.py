"""Bit-packed boolean tensors: exploration histories at 1 bit per weight (torch ops, any device).

A `PackedBits` holds a bool tensor of any shape as ⌈n/8⌉ uint8 (flattened order, entry i at
bit i % 8 of byte i // 8, least significant first). `or_` packs a mask and ORs it in; packing
views 8 bools (bytes 0/1) as one int64 word and gathers their low bits into the top byte
with one multiply (x · 0x0102040810204080 >> 56), so it reads the mask once and writes n/8
bytes. `unpack` and `count` serve the metrics (epoch ends, not every step).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["PackedBits", "pack_bits", "unpack_bits"]

_GATHER = 0x0102040810204080  # byte j of a word (0 or 1) -> bit j of its top byte
_BIT = (1, 2, 4, 8, 16, 32, 64, 128)
_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def pack_bits(mask: Tensor) -> Tensor:
    """A bool (or 0/1) tensor as ⌈n/8⌉ uint8, entry i at bit i % 8 of byte i // 8."""
    flat = mask.detach().reshape(-1)
    if flat.dtype != torch.bool:
        flat = flat != 0
    pad = -flat.numel() % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    words = flat.contiguous().view(torch.uint8).view(torch.int64)
    # int64 products wrap (two's complement); the arithmetic shift's sign bits are masked off
    return words.mul(_GATHER).bitwise_right_shift_(56).bitwise_and_(0xFF).to(torch.uint8)


def unpack_bits(packed: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """The bool tensor of `shape` that `pack_bits` packed into `packed`."""
    n = 1
    for s in shape:
        n *= int(s)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (n + 7) // 8:
        raise ValueError(f"packed bits for shape {tuple(shape)} must be {(n + 7) // 8} uint8, "
                         f"got {packed.numel()} {packed.dtype}")
    bit = torch.tensor(_BIT, dtype=torch.uint8, device=packed.device)
    return (packed.unsqueeze(1).bitwise_and(bit) != 0).view(-1)[:n].view(tuple(shape))


class PackedBits:
    """A bool tensor of `shape` kept bit-packed; updated in place by OR."""

    __slots__ = ("bits", "shape")

    def __init__(self, bits: Tensor, shape: torch.Size | tuple[int, ...]) -> None:
        self.shape = torch.Size(shape)
        if bits.dtype != torch.uint8 or bits.numel() != (self.shape.numel() + 7) // 8:
            raise ValueError(f"packed bits for shape {tuple(self.shape)} must be "
                             f"{(self.shape.numel() + 7) // 8} uint8, got {bits.numel()} {bits.dtype}")
        self.bits = bits

    @classmethod
    def of(cls, mask: Tensor) -> PackedBits:
        return cls(pack_bits(mask), mask.shape)

    def or_(self, mask: Tensor) -> PackedBits:
        if mask.shape != self.shape:
            raise ValueError(f"mask of shape {tuple(mask.shape)} for a history of shape {tuple(self.shape)}")
        self.bits.bitwise_or_(pack_bits(mask))
        return self

    def zero_(self) -> PackedBits:
        self.bits.zero_()
        return self

    def unpack(self) -> Tensor:
        return unpack_bits(self.bits, self.shape)

    def count(self) -> int:
        """Number of set entries (padding bits are always 0)."""
        return int(_POPCOUNT.to(self.bits.device)[self.bits.long()].sum())

    def numel(self) -> int:
        return self.shape.numel()

    @property
    def nbytes(self) -> int:
        return self.bits.numel()

    @property
    def device(self) -> torch.device:
        return self.bits.device

    def to(self, device: torch.device | str) -> PackedBits:
        return PackedBits(self.bits.to(device), self.shape)

    def clone(self) -> PackedBits:
        return PackedBits(self.bits.clone(), self.shape)
