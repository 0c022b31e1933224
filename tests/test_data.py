"""Datasets through the real torchvision loaders on tiny files in the real on-disk formats,
and the determinism / sharding contract of the batch iterators."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from trainables.config import ConfigError, DataConfig
from trainables.data import (
    DataBundle,
    _random_crop,
    check_available,
    eval_batches,
    load_data,
    steps_per_epoch,
    train_batches,
)

# ----- writers of the real formats -----------------------------------------------------------


class _Py2Pickler(pickle._Pickler):  # type: ignore[misc, name-defined]
    """Writes strings the way Python 2 did (BINSTRING opcodes), as in the official CIFAR
    batches: they load as b'data' with encoding='bytes' and 'data' with encoding='latin1'."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _py2_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x, y = _images(rng, 4), rng.integers(0, 10, 4).tolist()
        _py2_pickle(folder / f"data_batch_{i}", {
            b"batch_label": f"training batch {i} of 5".encode(), b"labels": y, b"data": x,
            b"filenames": [f"img{i}_{j}.png".encode() for j in range(4)]})
        train_x.append(x)
        train_y += y
    test_x, test_y = _images(rng, 6), rng.integers(0, 10, 6).tolist()
    _py2_pickle(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": test_y,
                                        b"data": test_x, b"filenames": [b"t.png"] * 6})
    _py2_pickle(folder / "batches.meta", {
        b"num_cases_per_batch": 4, b"num_vis": 3072,
        b"label_names": [s.encode() for s in "abcdefghij"]})
    return np.concatenate(train_x), train_y, test_x, test_y


def write_cifar100(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = []
    for name, n in (("train", 10), ("test", 4)):
        x, y = _images(rng, n), rng.integers(0, 100, n).tolist()
        _py2_pickle(folder / name, {
            b"filenames": [b"x.png"] * n, b"batch_label": name.encode(), b"fine_labels": y,
            b"coarse_labels": [v // 5 for v in y], b"data": x})
        out += [x, y]
    _py2_pickle(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                                  b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})
    return out[0], out[1], out[2], out[3]


def write_svhn(root: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for split, n in (("train", 7), ("test", 3)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # (H, W, C, N) as in the .mat
        y = np.array([[10], [1], [9], [10], [5], [2], [3]][:n], dtype=np.uint8)  # 10 means digit 0
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, y)
    return out


def _idx(data: np.ndarray) -> bytes:
    magic = struct.pack(">HBB", 0, 0x08, data.ndim)  # unsigned byte, ndim dimensions
    return magic + struct.pack(f">{data.ndim}I", *data.shape) + data.tobytes()


def write_mnist(root: Path, folder: str, rng: np.random.Generator, gz: bool) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5).astype(np.uint8),
    }
    for name, arr in arrays.items():
        if gz:
            with gzip.open(raw / f"{name}.gz", "wb") as f:
                f.write(_idx(arr))
        else:
            (raw / name).write_bytes(_idx(arr))
    return arrays


# ----- loading ---------------------------------------------------------------------------------


def _cfg(dataset: str, root: Path, **kw) -> DataConfig:
    return DataConfig(dataset=dataset, data_dir=str(root), **kw)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_round_trip(tmp_path: Path, dataset: str) -> None:
    writer = write_cifar10 if dataset == "cifar10" else write_cifar100
    train_x, train_y, test_x, test_y = writer(tmp_path, np.random.default_rng(0))
    b = load_data(_cfg(dataset, tmp_path), progress=False, verify=False)
    assert b.train_x.dtype == torch.uint8 and b.train_x.shape == (len(train_y), 3, 32, 32)
    # a CIFAR row is R (1024 values, row-major 32x32), then G, then B
    assert torch.equal(b.train_x, torch.from_numpy(train_x.reshape(-1, 3, 32, 32)))
    assert torch.equal(b.test_x, torch.from_numpy(test_x.reshape(-1, 3, 32, 32)))
    assert b.train_y.tolist() == train_y and b.test_y.tolist() == test_y
    assert (b.num_classes, b.channels, b.image_size) == (10 if dataset == "cifar10" else 100, 3, 32)
    unit = train_x.reshape(-1, 3, 1024) / 255.0
    assert torch.allclose(b.mean, torch.from_numpy(unit.mean(axis=(0, 2))).float(), atol=1e-6)
    assert torch.allclose(b.std, torch.from_numpy(unit.std(axis=(0, 2))).float(), atol=1e-5)


def test_cifar_md5_is_checked_by_default(tmp_path: Path) -> None:
    write_cifar10(tmp_path, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="md5") as err:
        load_data(_cfg("cifar10", tmp_path), progress=False)
    assert "\n" not in str(err.value) and "data.download=true" in str(err.value)


def test_svhn_round_trip(tmp_path: Path) -> None:
    mats = write_svhn(tmp_path, np.random.default_rng(1))
    b = load_data(_cfg("svhn", tmp_path), progress=False, verify=False)
    x, y = mats["train"]
    assert b.train_x.shape == (7, 3, 32, 32)
    assert int(b.train_x[4, 2, 5, 17]) == int(x[5, 17, 2, 4])  # X[row, col, channel, n]
    assert torch.equal(b.train_x, torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))))
    assert b.train_y.tolist() == [0, 1, 9, 0, 5, 2, 3]  # 10 -> 0
    assert b.test_y.tolist() == [0, 1, 9]


@pytest.mark.parametrize(("dataset", "folder", "gz"), [("mnist", "MNIST", True),
                                                        ("fashionmnist", "FashionMNIST", False)])
def test_mnist_round_trip(tmp_path: Path, dataset: str, folder: str, gz: bool) -> None:
    arrays = write_mnist(tmp_path, folder, np.random.default_rng(2), gz)
    check_available(_cfg(dataset, tmp_path))
    b = load_data(_cfg(dataset, tmp_path), progress=False)
    assert b.train_x.shape == (12, 1, 28, 28) and b.test_x.shape == (5, 1, 28, 28)
    assert torch.equal(b.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(b.test_x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert b.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert b.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(DataConfig(), progress=False)


def test_digits(digits: DataBundle) -> None:
    assert digits.train_x.shape == (1437, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32
    assert float(digits.train_x.min()) >= 0.0 and float(digits.train_x.max()) == 1.0
    assert set(digits.train_y.tolist()) == set(range(10)) == set(digits.test_y.tolist())
    assert torch.bincount(digits.test_y).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    assert torch.equal(load_data(DataConfig(), progress=False).test_x, digits.test_x)


def test_resize_once_at_load(tmp_path: Path) -> None:
    b = load_data(DataConfig(resize=16), progress=False)
    assert b.train_x.shape == (1437, 1, 16, 16) and b.image_size == 16
    write_cifar10(tmp_path, np.random.default_rng(0))
    c = load_data(_cfg("cifar10", tmp_path, resize=16), progress=False, verify=False)
    assert c.train_x.dtype == torch.uint8 and c.train_x.shape == (20, 3, 16, 16)
    x, _ = next(train_batches(c, batch_size=8, epoch=0, seed=0, augment=True))
    assert x.shape == (8, 3, 16, 16)


@pytest.mark.parametrize(("dataset", "expected"), [
    ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
    ("svhn", "train_32x32.mat"), ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
    ("fashionmnist", "FashionMNIST/raw/t10k-labels-idx1-ubyte")])
def test_missing_dataset_names_path_and_flag(tmp_path: Path, dataset: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_available(_cfg(dataset, tmp_path))
    msg = str(err.value)
    assert str(tmp_path / expected) in msg and "data.download=true" in msg and dataset in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError):
        load_data(_cfg(dataset, tmp_path), progress=False)
    check_available(_cfg(dataset, tmp_path, download=True))  # will be fetched: no error
    check_available(DataConfig())  # digits ships with scikit-learn


def test_svhn_partial_names_only_missing_file(tmp_path: Path) -> None:
    write_svhn(tmp_path, np.random.default_rng(0))
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(ConfigError, match="test_32x32.mat") as err:
        check_available(_cfg("svhn", tmp_path))
    assert "train_32x32" not in str(err.value)


# ----- batches ---------------------------------------------------------------------------------


def _indexed(n_train: int, n_test: int, dataset: str = "digits") -> DataBundle:
    """Images whose every pixel is their index, mean 0 / std 1: a batch reveals its indices."""
    def images(n: int) -> torch.Tensor:
        return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return DataBundle(dataset=dataset, train_x=images(n_train), train_y=torch.arange(n_train) % 10,
                      test_x=images(n_test), test_y=torch.arange(n_test) % 10, num_classes=10,
                      channels=1, image_size=4, mean=torch.zeros(1), std=torch.ones(1))


def _cifar_like(n: int = 64) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return DataBundle(dataset="cifar10", train_x=x, train_y=torch.arange(n) % 10, test_x=x[:8],
                      test_y=torch.arange(8), num_classes=10, channels=3, image_size=32,
                      mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25))


def _ids(batches) -> list[list[int]]:
    return [x[:, 0, 0, 0].long().tolist() for x, _ in batches]


def test_steps_per_epoch() -> None:
    assert steps_per_epoch(1437, 128) == 11
    assert steps_per_epoch(1437, 128, drop_last=False) == 12
    with pytest.raises(ValueError):
        steps_per_epoch(10, 20)


def test_train_order_is_deterministic_per_seed_and_epoch(digits: DataBundle) -> None:
    def run(**kw):
        return list(train_batches(digits, batch_size=100, augment=True, **kw))
    a, b = run(seed=3, epoch=1), run(seed=3, epoch=1)
    assert len(a) == 14 and all(x.shape == (100, 1, 8, 8) and x.dtype == torch.float32 for x, _ in a)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    c, d = run(seed=3, epoch=2), run(seed=4, epoch=1)
    assert not torch.equal(a[0][1], c[0][1]) and not torch.equal(a[0][1], d[0][1])


def test_epoch_visits_each_example_at_most_once() -> None:
    ids = sum(_ids(train_batches(_indexed(103, 5), batch_size=10, epoch=0, seed=0, augment=False)), [])
    assert len(ids) == 100 and len(set(ids)) == 100  # drop_last: 3 examples left out


@pytest.mark.parametrize("bundle_fn", [lambda: _indexed(103, 5), _cifar_like])
def test_ranks_split_the_global_batch(bundle_fn) -> None:
    bundle = bundle_fn()
    kw = {"batch_size": 16, "epoch": 5, "seed": 1, "augment": True}
    whole = list(train_batches(bundle, **kw))
    shards = [list(train_batches(bundle, rank=r, world_size=2, **kw)) for r in range(2)]
    assert len(whole) == len(shards[0]) == len(shards[1])
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shards, strict=True):
        assert x0.shape[0] == x1.shape[0] == 8
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    if bundle.dataset == "digits":
        for ids0, ids1 in zip(_ids(shards[0]), _ids(shards[1]), strict=True):
            assert not set(ids0) & set(ids1)


def test_batch_size_must_divide_by_world_size() -> None:
    with pytest.raises(ValueError, match="divisible"):
        next(train_batches(_indexed(50, 5), batch_size=10, epoch=0, seed=0, rank=0, world_size=3,
                           augment=False))


def test_augmentation_only_where_it_belongs(digits: DataBundle) -> None:
    cifar = _cifar_like()
    kw = {"batch_size": 32, "epoch": 0, "seed": 0}
    (plain, y_plain), (aug, y_aug) = (next(train_batches(cifar, augment=a, **kw)) for a in (False, True))
    assert torch.equal(y_plain, y_aug) and not torch.equal(plain, aug)  # same order, new pixels
    (p, _), (a, _) = (next(train_batches(digits, augment=a, **kw)) for a in (False, True))
    assert torch.equal(p, a)


def test_random_crop_is_a_zero_padded_shift() -> None:
    x = torch.randint(1, 256, (3, 3, 8, 8), dtype=torch.uint8)
    out = _random_crop(x, torch.tensor([[2, 2], [0, 2], [2, 4]]), pad=2)  # (dy, dx) in [0, 4]
    assert torch.equal(out[0], x[0])  # offset == pad: identity
    assert torch.equal(out[1, :, 2:, :], x[1, :, :6, :])  # shifted down by 2, zero rows on top
    assert int(out[1, :, :2].sum()) == 0
    assert torch.equal(out[2, :, :, :6], x[2, :, :, 2:])  # shifted left by 2, zero columns right
    assert int(out[2, :, :, 6:].sum()) == 0


def test_eval_shards_cover_test_set_once() -> None:
    bundle = _indexed(10, 37)
    seen: list[int] = []
    counts = []
    for rank in range(3):
        batches = _ids(eval_batches(bundle, batch_size=5, rank=rank, world_size=3))
        counts.append(len(batches))
        assert all(len(b) <= 5 for b in batches)
        seen += sum(batches, [])
    assert sorted(seen) == list(range(37)) and seen == list(range(37))  # contiguous, in order
    assert len(set(counts)) == 1  # every rank yields the same number of batches
    single = _ids(eval_batches(bundle, batch_size=10))
    assert [len(b) for b in single] == [10, 9, 9, 9]  # near-equal batches, none above 10
