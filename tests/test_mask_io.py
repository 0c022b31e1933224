"""Mask files: exact round trip, the table's columns, and loud failure on damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from trainables.sparse.mask_io import (
    GAP_CODING_BELOW,
    SCHEMA_V1,
    MaskFileError,
    decode_mask,
    encode_mask,
    read_masks,
    write_masks,
)


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
             "b.weight": torch.tensor([True] * 9 + [False]),
             "c.weight": torch.tensor([True] * 3 + [False] * 97)}
    path = tmp_path / "m.parquet"
    write_masks(path, masks)
    table = pq.read_table(path)
    assert table.schema.metadata[b"sparsesweep.version"] == b"2"
    rows = table.to_pylist()
    assert rows[0]["layer"] == "a.weight" and rows[0]["shape"] == [2, 3] and rows[0]["numel"] == 6
    assert rows[0]["density"] == 2 / 6 and rows[0]["encoding"] == "bits"
    assert rows[1]["density"] == 0.9 and rows[1]["encoding"] == "zeros"  # 1 of 10 is a zero
    assert rows[2]["density"] == 0.03 and rows[2]["encoding"] == "ones"
    assert table.schema.field("payload").type == pa.binary()
    # the payloads are zstd frames already: Parquet does not compress them again
    meta = pq.ParquetFile(path).metadata.row_group(0)
    assert meta.column(5).compression == "UNCOMPRESSED" and meta.column(0).compression == "ZSTD"


def test_gap_coding_by_hand() -> None:
    flat = np.zeros(20, dtype=bool)
    flat[[0, 3, 4, 10, 19]] = True  # 5 of 20 = 0.25: not below the threshold -> bits
    assert encode_mask(flat)[0] == "bits" and GAP_CODING_BELOW == 0.25
    flat[[10, 19]] = False  # 3 of 20: positions 0, 3, 4 -> gaps 0, 2, 0
    encoding, payload = encode_mask(flat)
    assert encoding == "ones"
    # a size header (12 bytes), then uint32 gaps as 4 byte planes: low bytes 0, 2, 0, three zero planes
    assert payload[:8] == (12).to_bytes(8, "little")
    raw = pa.Codec("zstd").decompress(payload[8:], decompressed_size=12, asbytes=True)
    assert raw == bytes([0, 2, 0] + [0] * 9)
    assert np.array_equal(decode_mask(encoding, payload, 20), flat)
    assert np.array_equal(decode_mask(*encode_mask(~flat), 20), ~flat)  # "zeros": the complement


@pytest.mark.parametrize("density", [0.0, 0.0001, 0.01, 0.05, 0.2, 0.3, 0.5, 0.8, 0.95, 0.99, 0.9999, 1.0])
def test_round_trip_at_every_density(tmp_path: Path, density: float) -> None:
    rng = np.random.default_rng(1)
    mask = torch.from_numpy(rng.random(20_011) < density) if 0 < density < 1 else \
        torch.full((20_011,), bool(density))
    write_masks(tmp_path / "m.parquet", {"w": mask.view(-1, 1)})
    assert torch.equal(read_masks(tmp_path / "m.parquet")["w"], mask.view(-1, 1))


@pytest.mark.parametrize("density", [0.5, 0.3, 0.2, 0.05, 0.01])
def test_bits_per_weight_within_ten_percent_of_the_entropy(density: float) -> None:
    """Issue goal: at most 1.1 H(d) + 0.01 bits per weight on iid masks (payload only; a file
    adds a fixed footer of about a kilobyte)."""
    n = 400_000
    flat = np.random.default_rng(2).random(n) < density
    d = flat.mean()
    entropy = -d * np.log2(d) - (1 - d) * np.log2(1 - d)
    bits = len(encode_mask(flat)[1]) * 8 / n
    assert bits <= 1.1 * entropy + 0.01, (density, bits, entropy)


def test_reads_format_1_files(tmp_path: Path) -> None:
    """Masks written by the first release (packed bits in a `bits` column) still load."""
    masks = _masks()
    rows = {f.name: [] for f in SCHEMA_V1}
    for name, m in masks.items():
        flat = m.reshape(-1).numpy()
        rows["layer"].append(name)
        rows["shape"].append(list(m.shape))
        rows["numel"].append(flat.size)
        rows["density"].append(float(flat.sum()) / flat.size)
        rows["bits"].append(np.packbits(flat).tobytes())
    path = tmp_path / "v1.parquet"
    pq.write_table(pa.table(rows, schema=SCHEMA_V1), path, compression="zstd")
    back = read_masks(path)
    assert all(torch.equal(back[k], masks[k]) for k in masks)


def test_refuses_a_newer_format(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    write_masks(path, {"a": torch.ones(4, dtype=torch.bool)})
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"sparsesweep.format": b"masks",
                                                  b"sparsesweep.version": b"9"}), path)
    with pytest.raises(MaskFileError, match="version 9 is newer"):
        read_masks(path)


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


def _payload(raw: bytes) -> bytes:
    return len(raw).to_bytes(8, "little") + pa.Codec("zstd").compress(raw, asbytes=True)


def test_inconsistent_rows_raise(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    masks = {"a": torch.tensor([True] * 5 + [False] * 5)}  # density .5: packed bits
    write_masks(path, masks)
    _rewrite(path, "payload", [_payload(b"\xff")])  # 1 byte for numel 10
    with pytest.raises(MaskFileError, match="bytes of bits"):
        read_masks(path)
    write_masks(path, masks)
    _rewrite(path, "density", [0.4])
    with pytest.raises(MaskFileError, match="density"):
        read_masks(path)
    write_masks(path, masks)
    _rewrite(path, "payload", [_payload(bytes([0xF8, 0xFF]))])  # padding set
    with pytest.raises(MaskFileError, match="padding"):
        read_masks(path)
    write_masks(path, masks)
    _rewrite(path, "shape", [[3, 3]])
    with pytest.raises(MaskFileError, match="shape"):
        read_masks(path)
    write_masks(path, masks)
    _rewrite(path, "encoding", ["rle"])
    with pytest.raises(MaskFileError, match="unknown encoding 'rle'"):
        read_masks(path)
    write_masks(path, masks)
    _rewrite(path, "payload", [(5).to_bytes(8, "little") + b"not zstd"])
    with pytest.raises(MaskFileError, match="does not decompress"):
        read_masks(path)
    sparse = {"b": torch.tensor([True] + [False] * 19)}
    write_masks(path, sparse)
    _rewrite(path, "payload", [_payload(np.array([[25], [0], [0], [0]], np.uint8).tobytes())])
    with pytest.raises(MaskFileError, match="past entry 20"):
        read_masks(path)


def test_each_padding_bit_alone_is_refused(tmp_path: Path) -> None:
    # numel 10 packs into 2 bytes: entries 0-9, then padding bits 10-15 (big-endian: entry 10 is
    # 0x20 of the second byte, entry 15 is 0x01). The data bits keep density .5, so only the
    # padding check can see the damage.
    path = tmp_path / "m.parquet"
    masks = {"a": torch.tensor([True] * 5 + [False] * 5)}
    for bit in range(10, 16):
        second = 1 << (15 - bit)
        with pytest.raises(MaskFileError, match="padding bits after entry 10"):
            decode_mask("bits", _payload(bytes([0xF8, second])), 10)
        write_masks(path, masks)
        _rewrite(path, "payload", [_payload(bytes([0xF8, second]))])
        with pytest.raises(MaskFileError, match="padding"):
            read_masks(path)
    # the same bytes without padding decode to the mask
    assert decode_mask("bits", _payload(bytes([0xF8, 0x00])), 10).tolist() == [True] * 5 + [False] * 5


def test_packbits_is_one_bit_per_weight(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.random(80_000) < 0.5)
    path = tmp_path / "big.parquet"
    write_masks(path, {"w": mask})
    assert path.stat().st_size < 80_000 / 8 + 2_000  # bits + a fixed footer


@pytest.mark.parametrize("density", [0.01, 0.05, 0.2, 0.3, 0.5])
def test_round_trip_beside_empty_and_full_layers(tmp_path: Path, density: float) -> None:
    """One file mixing the issue's densities with an empty and a full layer of odd sizes (every
    encoding in one file), and a one-entry empty and full layer."""
    rng = np.random.default_rng(3)
    masks = {"d.weight": torch.from_numpy(rng.random((37, 29)) < density),
             "empty.weight": torch.zeros(5, 3, 3, 3, dtype=torch.bool),
             "full.weight": torch.ones(7, 13, dtype=torch.bool),
             "one_empty.weight": torch.zeros(1, dtype=torch.bool),
             "one_full.weight": torch.ones(1, dtype=torch.bool)}
    write_masks(tmp_path / "m.parquet", masks)
    back = read_masks(tmp_path / "m.parquet")
    assert list(back) == list(masks)
    assert all(torch.equal(back[k], masks[k]) for k in masks)
