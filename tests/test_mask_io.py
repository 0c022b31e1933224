"""Mask files: exact round trip, the table's columns, and loud failure on damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from trainables.sparse.mask_io import MaskFileError, read_masks, write_masks


def _masks() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "features.0.weight": torch.rand(5, 3, 3, 3, generator=g) < 0.3,  # 135: not a multiple of 8
        "fc.weight": torch.rand(7, 11, generator=g) < 0.9,  # 77
        "tiny.weight": torch.tensor([True]),
        "all.weight": torch.ones(16, dtype=torch.bool),
        "none.weight": torch.zeros(3, 3, dtype=torch.bool),
    }


def test_round_trip(tmp_path: Path) -> None:
    masks = _masks()
    path = tmp_path / "sub" / "masks.parquet"
    write_masks(path, masks)
    back = read_masks(path)
    assert list(back) == list(masks)
    for name, m in masks.items():
        assert back[name].dtype == torch.bool
        assert torch.equal(back[name], m), name
    assert [p.name for p in path.parent.iterdir()] == ["masks.parquet"]  # no temp file left


def test_table_columns(tmp_path: Path) -> None:
    masks = {"a.weight": torch.tensor([[True, False, True], [False, False, False]]),
             "b.weight": torch.tensor([True] * 9 + [False])}
    path = tmp_path / "m.parquet"
    write_masks(path, masks)
    table = pq.read_table(path)
    rows = table.to_pylist()
    assert rows[0]["layer"] == "a.weight" and rows[0]["shape"] == [2, 3] and rows[0]["numel"] == 6
    assert rows[0]["density"] == 2 / 6
    assert rows[0]["bits"] == bytes([0b10100000])
    assert rows[1]["density"] == 0.9 and rows[1]["bits"] == bytes([0xFF, 0b10000000])
    assert table.schema.field("bits").type == pa.binary()
    assert pq.ParquetFile(path).metadata.row_group(0).column(4).compression == "ZSTD"


def test_accepts_0_1_floats_and_rejects_other_values(tmp_path: Path) -> None:
    write_masks(tmp_path / "f.parquet", {"x": torch.tensor([1.0, 0.0, 1.0])})
    assert torch.equal(read_masks(tmp_path / "f.parquet")["x"], torch.tensor([True, False, True]))
    with pytest.raises(ValueError):
        write_masks(tmp_path / "g.parquet", {"x": torch.tensor([0.5, 1.0])})


def test_corrupted_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    write_masks(path, _masks())
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(data[: len(data) - 20]))
    with pytest.raises(MaskFileError, match="m.parquet"):
        read_masks(path)


def _rewrite(path: Path, column: str, values: list) -> None:
    table = pq.read_table(path)
    i = table.column_names.index(column)
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type)), path)


def test_inconsistent_rows_raise(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    masks = {"a": torch.ones(10, dtype=torch.bool)}
    write_masks(path, masks)
    _rewrite(path, "bits", [b"\xff"])  # 1 byte for numel 10
    with pytest.raises(MaskFileError, match="bytes of bits"):
        read_masks(path)
    write_masks(path, masks)
    _rewrite(path, "density", [0.5])
    with pytest.raises(MaskFileError, match="density"):
        read_masks(path)
    write_masks(path, masks)
    _rewrite(path, "bits", [bytes([0xFF, 0xFF])])  # padding bits set
    with pytest.raises(MaskFileError, match="padding"):
        read_masks(path)
    write_masks(path, masks)
    _rewrite(path, "shape", [[3, 3]])
    with pytest.raises(MaskFileError, match="shape"):
        read_masks(path)


def test_packbits_is_one_bit_per_weight(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.random(80_000) < 0.5)
    path = tmp_path / "big.parquet"
    write_masks(path, {"w": mask})
    assert path.stat().st_size < 80_000 / 8 + 2_000  # bits + a fixed footer
