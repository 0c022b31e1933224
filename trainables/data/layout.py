"""Where a dataset's files live under data.data_dir, and which files it needs."""

from __future__ import annotations

from pathlib import Path

from trainables.config import DATASETS, DataConfig

DEFAULT_ROOT = "~/.cache/sparsesweep/data"  # only used when data.download=true and no data_dir

TABULAR_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")


def data_root(cfg: DataConfig) -> Path:
    """Where torchvision datasets live: data.data_dir, or a cache dir when only downloading."""
    return Path(cfg.data_dir or DEFAULT_ROOT).expanduser()


def expected_files(dataset: str, root: Path) -> list[list[Path]]:
    """The files a dataset needs, as alternatives per file (MNIST idx files may be gzipped).

    Derived from torchvision's own class attributes so that they stay in sync with it.
    """
    from torchvision import datasets as tvd

    if dataset in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if dataset == "cifar10" else tvd.CIFAR100
        folder = root / cls.base_folder
        names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [[folder / n] for n in names]
    if dataset == "svhn":
        return [[root / tvd.SVHN.split_list[s][1]] for s in ("train", "test")]
    if dataset in ("mnist", "fashionmnist"):
        cls = tvd.MNIST if dataset == "mnist" else tvd.FashionMNIST
        raw = root / cls.__name__ / "raw"
        names = [n.removesuffix(".gz") for n, _ in cls.resources]
        return [[raw / n, raw / f"{n}.gz"] for n in names]
    if DATASETS[dataset].tabular:
        return [[root / f"{dataset}{ext}" for ext in TABULAR_SUFFIXES]]
    return []  # digits ships with scikit-learn
