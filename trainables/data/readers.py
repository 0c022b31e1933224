"""Readers of each on-disk format into tensors: scikit-learn digits, tabular files (Higgs),
torchvision's CIFAR / SVHN / MNIST files (md5-checked unless verify=False), and the one-time
resize and channel statistics."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from trainables.config import ConfigError, DataConfig, DatasetSpec
from trainables.data.layout import TABULAR_SUFFIXES

Split = tuple[torch.Tensor, torch.Tensor]


# Datasets that plugins register (trainables.plugins): name -> a reader of both splits,
# (train_x, train_y, test_x, test_y), images as (N, C, H, W), labels in [0, classes).
EXTRA_READERS: dict[str, Callable[[DataConfig], tuple[torch.Tensor, ...]]] = {}


def read_extra(cfg: DataConfig, spec: DatasetSpec) -> tuple[torch.Tensor, ...]:
    """A plugin's reader, its output checked against the dataset's spec (a wrong shape fails here,
    not in the model)."""
    out = EXTRA_READERS[cfg.dataset](cfg)
    if not (isinstance(out, tuple) and len(out) == 4 and all(isinstance(t, torch.Tensor) for t in out)):
        raise ValueError(f"dataset {cfg.dataset}: its reader must return 4 tensors "
                         f"(train_x, train_y, test_x, test_y)")
    train_x, train_y, test_x, test_y = out
    for name, x in (("train_x", train_x), ("test_x", test_x)):
        if x.ndim != 4 or x.shape[1] != spec.channels or x.shape[-1] != spec.image_size:
            raise ValueError(f"dataset {cfg.dataset}: {name} has shape {tuple(x.shape)}, not "
                             f"(N, {spec.channels}, {spec.image_size}, {spec.image_size}) as its spec says")
    return train_x.float(), train_y.long(), test_x.float(), test_y.long()


def read_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (real data, offline), stratified 80/20 split: 1437/360."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images).float().div_(16.0).unsqueeze(1)  # values 0..16 -> [0, 1]
    y = torch.from_numpy(d.target).long()
    i_train, i_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.2, random_state=0, stratify=d.target)
    i_train, i_test = torch.from_numpy(i_train), torch.from_numpy(i_test)
    return x[i_train].contiguous(), y[i_train], x[i_test].contiguous(), y[i_test]


# Tabular files, tried in this order: <data_dir>/<dataset>.parquet, then .csv.


# The label column (OpenML 44129 calls it "target"); every other column is a feature.
LABEL_COLUMNS: tuple[str, ...] = ("target", "label", "class")


def read_tabular(dataset: str, root: Path, spec: DatasetSpec
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Higgs-layout table (OpenML 44129): one label column, `spec.channels` numeric features.

    Split 70/15/15 (train/validation/test, fantastic-weights-dst.txt Table 4), stratified,
    with a fixed seed; the bundle keeps train and test (no engine split for validation, and
    the training set keeps the paper's size, which Δt is measured against). Rows are stored
    as float32 (N, features, 1, 1), so the per-channel statistics standardise each feature.
    """
    import numpy as np
    import pyarrow.compute as pc
    from sklearn.model_selection import train_test_split

    path = next(p for p in (root / f"{dataset}{ext}" for ext in TABULAR_SUFFIXES) if p.is_file())
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path)
    except Exception as e:  # pyarrow raises several types for a malformed file
        raise ConfigError(f"data.data_dir: cannot read {path} ({str(e).splitlines()[0]})") from e
    labels = [c for c in table.column_names if c.lower() in LABEL_COLUMNS]
    if len(labels) != 1:
        raise ConfigError(f"data.data_dir: {path} needs exactly one label column named one of "
                          f"{', '.join(LABEL_COLUMNS)}, found columns {table.column_names[:8]}...")
    features = [c for c in table.column_names if c != labels[0]]
    if len(features) != spec.channels:
        raise ConfigError(f"data.data_dir: {path} has {len(features)} feature columns, {dataset} has "
                          f"{spec.channels} (the Higgs layout of OpenML 44129)")
    try:
        x = np.stack([pc.cast(table[c], "float32").to_numpy(zero_copy_only=False) for c in features], 1)
        y = pc.cast(table[labels[0]], "int64").to_numpy(zero_copy_only=False)
    except Exception as e:
        raise ConfigError(f"data.data_dir: {path} holds non-numeric or missing values "
                          f"({str(e).splitlines()[0]})") from e
    if np.isnan(x).any():
        raise ConfigError(f"data.data_dir: {path} has missing feature values")
    idx = np.arange(len(y))
    i_train, i_rest = train_test_split(idx, train_size=0.7, random_state=0, stratify=y)
    _, i_test = train_test_split(i_rest, test_size=0.5, random_state=0, stratify=y[i_rest])
    xt = torch.from_numpy(x).view(len(y), spec.channels, 1, 1)
    yt = torch.from_numpy(np.array(y, dtype=np.int64))  # a writable copy
    return (xt[i_train].contiguous(), yt[i_train].contiguous(),
            xt[i_test].contiguous(), yt[i_test].contiguous())


def _without_md5(cls: type) -> type:
    """A subclass of a torchvision dataset whose md5 sums are None: existence-only checks."""
    attrs: dict[str, object] = {"__doc__": f"{cls.__name__} without md5 verification."}
    if hasattr(cls, "train_list"):
        attrs["train_list"] = [[n, None] for n, _ in cls.train_list]
        attrs["test_list"] = [[n, None] for n, _ in cls.test_list]
        attrs["meta"] = {**cls.meta, "md5": None}
    if hasattr(cls, "split_list"):
        attrs["split_list"] = {k: [u, f, None] for k, (u, f, _) in cls.split_list.items()}
    return type(f"Unverified{cls.__name__}", (cls,), attrs)


def _read_cifar(cls_name: str) -> Callable[[Path, bool, bool, bool], Split]:
    def read(root: Path, train: bool, download: bool, verify: bool) -> Split:
        from torchvision import datasets as tvd

        cls = getattr(tvd, cls_name)
        ds = (cls if verify else _without_md5(cls))(str(root), train=train, download=download)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        return x, torch.as_tensor(ds.targets, dtype=torch.long)
    return read


def _read_svhn(root: Path, train: bool, download: bool, verify: bool) -> Split:
    from torchvision import datasets as tvd

    cls = tvd.SVHN if verify else _without_md5(tvd.SVHN)
    ds = cls(str(root), split="train" if train else "test", download=download)
    # torchvision already maps label 10 -> 0 and transposes to NCHW
    return torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).long()


def _read_mnist(cls_name: str) -> Callable[[Path, bool, bool, bool], Split]:
    def read(root: Path, train: bool, download: bool, verify: bool) -> Split:
        from torchvision import datasets as tvd

        cls = getattr(tvd, cls_name)
        if not download:
            _gunzip_missing(root / cls_name / "raw", [n for n, _ in cls.resources])
        ds = cls(str(root), train=train, download=download)  # MNIST has no md5 check on read
        return ds.data.unsqueeze(1).contiguous(), ds.targets.long()
    return read


def _gunzip_missing(raw: Path, gz_names: list[str]) -> None:
    """torchvision reads only decompressed idx files; decompress a lone .gz as its download
    step would, atomically (concurrent trials may share one data_dir)."""
    for gz_name in gz_names:
        gz, out = raw / gz_name, raw / gz_name.removesuffix(".gz")
        if out.is_file() or not gz.is_file():
            continue
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        try:
            with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, out)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"data.data_dir: cannot decompress {gz} next to it ({e}); "
                              f"gunzip it or copy the dataset to a writable data.data_dir") from e


READERS: dict[str, Callable[[Path, bool, bool, bool], Split]] = {
    "cifar10": _read_cifar("CIFAR10"),
    "cifar100": _read_cifar("CIFAR100"),
    "svhn": _read_svhn,
    "mnist": _read_mnist("MNIST"),
    "fashionmnist": _read_mnist("FashionMNIST"),
}


def torchvision_call(dataset: str, root: Path, fn: Callable[[], Split]) -> Split:
    """Turn torchvision's multi-line RuntimeErrors into our one-line ConfigError."""
    try:
        return fn()
    except RuntimeError as e:
        raise ConfigError(
            f"data.data_dir: {dataset} under {root} is missing or failed torchvision's md5 check "
            f"({str(e).splitlines()[0]}); replace the files or set data.download=true") from e


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def resize_images(x: torch.Tensor, side: int, chunk: int = 2048) -> torch.Tensor:
    """Bilinear, antialiased resize done once at load; uint8 stays uint8 (rounded)."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    out = []
    for part in x.split(chunk):
        y = F.interpolate(_to_unit(part), size=(side, side), mode="bilinear",
                          align_corners=False, antialias=True)
        if x.dtype == torch.uint8:
            y = y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        out.append(y)
    return torch.cat(out) if out else x.new_zeros((0, x.shape[1], side, side))


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units, in float64.

    uint8 images go through a 256-bin histogram per channel (exact, and about 20x faster on
    CIFAR-10 than converting 150 M values to float); float images are summed chunk by chunk.
    """
    count = max(1, x.shape[0] * x.shape[2] * x.shape[3])
    if x.dtype == torch.uint8:
        values = torch.arange(256, dtype=torch.float64) / 255.0
        hist = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256)
                            for c in range(x.shape[1])]).double()
        total, squares = hist @ values, hist @ values.square()
    else:
        total = torch.zeros(x.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for part in x.split(chunk):
            u = part.double()
            total += u.sum(dim=(0, 2, 3))
            squares += u.square().sum(dim=(0, 2, 3))
    mean = total / count
    var = (squares / count - mean.square()).clamp_min(0)
    return mean.float(), var.sqrt().clamp_min(1e-6).float()
