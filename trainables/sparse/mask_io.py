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

__all__ = [
    "MaskFileError",
    "SCHEMA",
    "masks_table",
    "masks_to_bytes",
    "read_masks",
    "table_to_bytes",
    "write_bytes_atomic",
    "write_masks",
]

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


def masks_table(masks: Mapping[str, Tensor]) -> pa.Table:
    """`masks` (name -> bool tensor) as the Arrow table the file holds."""
    layers, shapes, numels, densities, bits = [], [], [], [], []
    for name, mask in masks.items():
        arr = _as_bool(name, mask)
        flat = arr.reshape(-1)
        layers.append(str(name))
        shapes.append([int(d) for d in arr.shape])
        numels.append(int(flat.size))
        densities.append(float(flat.sum()) / flat.size if flat.size else 0.0)
        bits.append(np.packbits(flat).tobytes())
    return pa.table([layers, shapes, numels, densities, bits], schema=SCHEMA)


def table_to_bytes(table: pa.Table) -> bytes:
    """A Parquet file (zstd) of `table`, in memory; mask tables skip statistics on the bits."""
    sink = pa.BufferOutputStream()
    if table.schema.equals(SCHEMA, check_metadata=False):
        # No dictionary or min/max statistics for the bits: they would only copy them.
        pq.write_table(table, sink, compression="zstd", use_dictionary=["layer"],
                       write_statistics=["layer", "numel", "density"])
    else:
        pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def masks_to_bytes(masks: Mapping[str, Tensor]) -> bytes:
    """The bytes `write_masks` would write, for keeping a mask in memory or in a checkpoint."""
    return table_to_bytes(masks_table(masks))


def write_masks(path: str | os.PathLike[str], masks: Mapping[str, Tensor]) -> None:
    """Write `masks` (name -> bool tensor) to a Parquet file at `path`, atomically."""
    write_bytes_atomic(path, masks_to_bytes(masks))


def write_bytes_atomic(path: str | os.PathLike[str], blob: bytes) -> None:
    """Write to a temporary name and rename, so a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
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
