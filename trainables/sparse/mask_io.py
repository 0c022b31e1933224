"""Masks on disk: one Parquet row per layer, the mask as packed bits (1 bit per weight).

Columns: layer (string), shape (list<int64>), numel (int64), density (float64, kept
fraction), bits (binary: `np.packbits` of the flattened mask, big-endian bit order, zero
padding). zstd on packed bits is close to the entropy for densities above ~5% (DESIGN.md).
Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

__all__ = ["MaskFileError", "SCHEMA", "read_masks", "write_masks"]

_FORMAT = {b"sparsesweep.format": b"masks", b"sparsesweep.version": b"1"}

SCHEMA = pa.schema(
    [
        pa.field("layer", pa.string(), nullable=False),
        pa.field("shape", pa.list_(pa.int64()), nullable=False),
        pa.field("numel", pa.int64(), nullable=False),
        pa.field("density", pa.float64(), nullable=False),
        pa.field("bits", pa.binary(), nullable=False),
    ],
    metadata=_FORMAT,
)


class MaskFileError(ValueError):
    """A mask file that cannot be read back faithfully; the message names file and layer."""


def _as_bool(name: str, mask: Tensor) -> np.ndarray:
    mask = mask.detach()
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask {name!r} holds values other than 0 and 1")
        mask = mask != 0
    return mask.cpu().numpy()


def write_masks(path: str | os.PathLike[str], masks: Mapping[str, Tensor]) -> None:
    """Write `masks` (name -> bool tensor) to a Parquet file at `path`, atomically."""
    layers, shapes, numels, densities, bits = [], [], [], [], []
    for name, mask in masks.items():
        arr = _as_bool(name, mask)
        flat = arr.reshape(-1)
        layers.append(str(name))
        shapes.append([int(d) for d in arr.shape])
        numels.append(int(flat.size))
        densities.append(float(flat.sum()) / flat.size if flat.size else 0.0)
        bits.append(np.packbits(flat).tobytes())
    table = pa.table([layers, shapes, numels, densities, bits], schema=SCHEMA)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            # No dictionary or min/max statistics for the bits: they would only copy them.
            pq.write_table(table, fh, compression="zstd", use_dictionary=["layer"],
                           write_statistics=["layer", "numel", "density"])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_masks(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a file written by `write_masks`; every row is checked before it is trusted."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise MaskFileError(f"{path}: not a readable mask file ({exc})") from exc
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise MaskFileError(f"{path}: not a mask file, missing columns {missing}")

    out: dict[str, Tensor] = {}
    for row in table.select([f.name for f in SCHEMA]).to_pylist():
        name, shape, numel, dens, bits = (row[f.name] for f in SCHEMA)
        where = f"{path}: layer {name!r}"
        if name is None or shape is None or numel is None or bits is None or dens is None:
            raise MaskFileError(f"{where}: a field is null")
        if name in out:
            raise MaskFileError(f"{where}: appears twice")
        if math.prod(shape) != numel:
            raise MaskFileError(f"{where}: shape {shape} does not hold numel={numel} entries")
        if len(bits) != (numel + 7) // 8:
            raise MaskFileError(f"{where}: {len(bits)} bytes of bits, expected "
                                f"{(numel + 7) // 8} for numel={numel}")
        unpacked = np.unpackbits(np.frombuffer(bits, dtype=np.uint8))
        if unpacked[numel:].any():
            raise MaskFileError(f"{where}: padding bits after entry {numel} are set")
        flat = unpacked[:numel].astype(bool)
        actual = float(flat.sum()) / numel if numel else 0.0
        if not math.isclose(actual, dens, rel_tol=0, abs_tol=1e-12):
            raise MaskFileError(f"{where}: bits have density {actual:.6g}, the table says {dens:.6g}")
        out[name] = torch.from_numpy(flat.reshape(shape))
    return out
