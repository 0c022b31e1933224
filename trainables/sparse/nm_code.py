"""N:M masks coded by each group's choice index, near log2(C(M,N)) / M bits per weight.

A group of M entries with exactly N kept is one of R = C(M,N) patterns; its index (the rank
of the M-bit pattern among the R, by value) is a digit in base R. `g` digits are packed into
one integer of b = ⌈g·log2 R⌉ bits (mixed radix, exact), with g ≤ 24 chosen to waste the
least: 2:4 packs 5 groups (6^5 = 7776 < 2^13) into 13 bits, 0.650 bits per weight against
the entropy log2(6)/4 = 0.646 (+0.6%). The b-bit words are laid end to end, packed bits.
Flat order: group i is entries [i·M, (i+1)·M) of the flattened mask, which are the groups of
the N:M pattern whenever M divides the layer's input dimension (trainables.sparse.nm).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

__all__ = ["MAX_M", "detect_nm", "nm_decode", "nm_encode", "words_per_chunk"]

MAX_M = 16  # patterns of up to 16 entries: a 65536-entry lookup table


@cache
def _tables(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(index of each M-bit pattern with N ones, else -1; the pattern of each index)."""
    patterns = np.array([p for p in range(1 << m) if bin(p).count("1") == n], dtype=np.int64)
    index = np.full(1 << m, -1, dtype=np.int64)
    index[patterns] = np.arange(len(patterns))
    return index, patterns


@cache
def words_per_chunk(n: int, m: int) -> tuple[int, int]:
    """(g groups per chunk, b bits per chunk) minimising b / g, with b <= 62."""
    r = math.comb(m, n)
    best = (1, max(1, math.ceil(math.log2(r))))
    for g in range(1, 25):
        b = max(1, math.ceil(g * math.log2(r) - 1e-12))
        while r ** g > (1 << b):  # guard the float log
            b += 1
        if b > 62:
            break
        if b / g < best[1] / best[0] - 1e-12:
            best = (g, b)
    return best


def _pattern_values(flat: np.ndarray, m: int) -> np.ndarray:
    bits = flat.reshape(-1, m).astype(np.int64)
    return (bits << np.arange(m - 1, -1, -1, dtype=np.int64)).sum(1)  # first entry = top bit


def detect_nm(flat: np.ndarray) -> tuple[int, int] | None:
    """The smallest M (2..MAX_M, dividing the size into >= 2 groups) whose every group holds the
    same N, 0 < N < M (one group would be any mask of that density)."""
    size = flat.size
    for m in range(2, MAX_M + 1):
        if size < 2 * m or size % m:
            continue
        head = flat[:64 * m].reshape(-1, m).sum(1)  # most masks fail on their first groups
        n = int(head[0])
        if not 0 < n < m or not bool((head == n).all()):
            continue
        counts = flat.reshape(-1, m).sum(1)
        if 0 < n < m and bool((counts == n).all()):
            return n, m
    return None


def nm_encode(flat: np.ndarray, n: int, m: int) -> bytes:
    """The packed chunks of a flat N:M mask (every group of `m` holds exactly `n`)."""
    index, _ = _tables(n, m)
    digits = index[_pattern_values(flat, m)]
    if (digits < 0).any():
        raise ValueError(f"mask is not {n}:{m}")
    g, b = words_per_chunk(n, m)
    r = math.comb(m, n)
    pad = -digits.size % g
    digits = np.concatenate([digits, np.zeros(pad, dtype=np.int64)]).reshape(-1, g)
    words = (digits * (r ** np.arange(g, dtype=np.int64))).sum(1)  # < r^g <= 2^b <= 2^62
    bits = ((words[:, None] >> np.arange(b - 1, -1, -1, dtype=np.int64)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


def nm_decode(raw: bytes, numel: int, n: int, m: int) -> np.ndarray:
    """The flat bool mask `nm_encode` coded; ValueError on a payload of the wrong size."""
    if numel % m:
        raise ValueError(f"{numel} entries are not whole groups of {m}")
    groups = numel // m
    g, b = words_per_chunk(n, m)
    chunks = -(-groups // g)
    if len(raw) != (chunks * b + 7) // 8:
        raise ValueError(f"{len(raw)} bytes, expected {(chunks * b + 7) // 8} for {groups} groups of {n}:{m}")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:chunks * b].reshape(chunks, b).astype(np.int64)
    words = (bits << np.arange(b - 1, -1, -1, dtype=np.int64)).sum(1)
    r = math.comb(m, n)
    digits = (words[:, None] // (r ** np.arange(g, dtype=np.int64))) % r
    digits = digits.reshape(-1)[:groups]
    _, patterns = _tables(n, m)
    values = patterns[digits]
    flat = ((values[:, None] >> np.arange(m - 1, -1, -1, dtype=np.int64)) & 1).astype(bool)
    return flat.reshape(-1)
