"""Random streams that are pure functions of a few values: same draws on resume, on every rank,
on every device, in every process (Python's `hash()` changes between processes; SHA-256 does not).

`stable_seed` hashes `repr(parts)`; `stable_generator` is a CPU `torch.Generator` seeded by it.
Two reductions of the 64-bit digest are in use and both stay, so that runs made before
reproduce bit for bit: the data order, augmentation and DST's prune/grow draws take its low 63
bits; the strong-lottery and IMP re-initialisations and the rank sample take its top 63 bits
(`top_bits=True`).
"""

from __future__ import annotations

import hashlib

import torch

_LOW_63 = (1 << 63) - 1


def _digest64(parts: tuple[object, ...]) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def stable_seed(*parts: object, top_bits: bool = False) -> int:
    """A non-negative 63-bit seed from a hash of `parts` that does not change between processes."""
    digest = _digest64(parts)
    return digest >> 1 if top_bits else digest & _LOW_63


def stable_generator(*parts: object, top_bits: bool = False) -> torch.Generator:
    """A CPU generator seeded by `stable_seed(*parts)` (stateless: resume-safe, the same on every rank)."""
    return torch.Generator().manual_seed(stable_seed(*parts, top_bits=top_bits))
