"""Datasets as in-memory tensors and a deterministic, DDP-aware batch iterator.

Why in memory: every dataset of the papers fits in RAM (CIFAR-10 is 150 MB as uint8),
so indexing one tensor per batch is faster on CPU than a DataLoader with worker processes
and is trivially reproducible. Images are stored compactly (uint8 for torchvision data,
float32 for the tiny digits set) and normalised per batch.

Determinism: the epoch's order and its augmentation are drawn from generators seeded by
a stable hash of (seed, epoch) for the whole GLOBAL batch; each DDP rank takes its
contiguous slice. So N workers see exactly the examples (and crops) one worker would.

Checksums: torchvision verifies CIFAR and SVHN files against md5 sums of the official
releases. `load_data(..., verify=True)` (the default) keeps that check. Hand-made files
(the tiny ones the tests write) cannot pass it, so `verify=False` loads through
subclasses of the same torchvision classes whose md5 sums are set to None: torchvision's
own code path then checks only that the files exist and parses them as usual.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from trainables.config import DATASETS, ConfigError, DataConfig, DatasetSpec
from trainables.rng import stable_generator

DEFAULT_ROOT = "~/.cache/sparsesweep/data"  # only used when data.download=true and no data_dir

# Augmentation per dataset: CIFAR random crop (zero padding) + horizontal flip, SVHN crop only
# (a flipped digit is another digit), MNIST-likes and digits none.
_AUGMENT: dict[str, tuple[bool, bool]] = {  # name -> (crop, flip)
    "cifar10": (True, True),
    "cifar100": (True, True),
    "svhn": (True, False),
}


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly, not with ==
class DataBundle:
    """Both splits of one dataset as tensors (NCHW images, int64 labels) plus its statistics.

    Images are uint8 in [0, 255] or float32 in [0, 1]; `mean`/`std` are per channel, in
    [0, 1] units, computed on the training split.
    """

    dataset: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    channels: int
    image_size: int
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_y.shape[0])

    def to(self, device: torch.device | str) -> DataBundle:
        """The same data on `device` (e.g. the whole uint8 CIFAR-10 on a GPU: no H2D per batch)."""
        return dataclasses.replace(
            self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
            test_x=self.test_x.to(device), test_y=self.test_y.to(device),
            mean=self.mean.to(device), std=self.std.to(device))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Raw stored images -> a new float32 tensor (x / scale - mean) / std on x's device."""
        scale = 255.0 if x.dtype == torch.uint8 else 1.0  # fold the scale into mean and std
        mean = (self.mean * scale).to(x.device).view(1, -1, 1, 1)
        std = (self.std * scale).to(x.device).view(1, -1, 1, 1)
        return x.to(torch.float32, copy=True).sub_(mean).div_(std)


# ----- availability ------------------------------------------------------------------------

# Datasets that plugins register (trainables.plugins): name -> a reader of both splits,
# (train_x, train_y, test_x, test_y), images as (N, C, H, W), labels int64 in [0, classes).
EXTRA_READERS: dict[str, Callable[[DataConfig], tuple[torch.Tensor, ...]]] = {}


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


def check_available(cfg: DataConfig) -> None:
    """Fail before anything starts, with one line naming what is missing and how to fix it."""
    if DATASETS[cfg.dataset].streamed:  # ImageFolder trees (ImageNet): never downloaded
        from trainables.folder_data import check_folder

        check_folder(cfg)
        return
    if DATASETS[cfg.dataset].bundled or cfg.dataset in EXTRA_READERS:  # a plugin's reader checks its own
        return
    if cfg.download and not DATASETS[cfg.dataset].tabular:
        return
    root = data_root(cfg)
    if DATASETS[cfg.dataset].tabular:
        files = expected_files(cfg.dataset, root)[0]
        if not any(p.is_file() for p in files):
            raise ConfigError(
                f"data.data_dir: dataset {cfg.dataset} not found, missing {files[0]} (or {files[1].name}); "
                f"point data.data_dir at the directory holding it (tabular data is never downloaded)")
        return
    missing = [alts for alts in expected_files(cfg.dataset, root)
               if not any(p.is_file() for p in alts)]
    if not missing:
        return
    folder = missing[0][0].parent
    if cfg.dataset.startswith("cifar") and not folder.is_dir():
        what = str(folder)  # the whole extracted CIFAR folder is absent: name it
    else:
        what = ", ".join(str(alts[0]) + "".join(f" (or {p.name})" for p in alts[1:])
                         for alts in missing)
    raise ConfigError(
        f"data.data_dir: dataset {cfg.dataset} not found, missing {what}; point "
        f"data.data_dir at the directory holding it or set data.download=true to fetch it")


# ----- loading -----------------------------------------------------------------------------

def load_data(cfg: DataConfig, *, progress: bool = True, verify: bool = True) -> DataBundle:
    """Read both splits into memory, resize once if asked, and compute train statistics.

    `verify=False` skips torchvision's md5 check of CIFAR/SVHN files (see module docstring);
    use it only for hand-made files. ImageFolder datasets (ImageNet) are not read into memory:
    they come back as a `trainables.folder_data.FolderData`, which streams them.
    """
    if DATASETS[cfg.dataset].streamed:
        from trainables.folder_data import load_folder

        return load_folder(cfg)  # type: ignore[return-value]  # the same batch API
    check_available(cfg)
    spec = DATASETS[cfg.dataset]
    steps = 3 + (cfg.resize > 0)
    with tqdm(total=steps, desc=f"preparing {cfg.dataset}", unit="step", disable=not progress,
              leave=False) as bar:
        bar.set_postfix_str("reading")
        if cfg.dataset == "digits":
            train_x, train_y, test_x, test_y = _read_digits()
            bar.update(2)
        elif cfg.dataset in EXTRA_READERS:
            train_x, train_y, test_x, test_y = _read_extra(cfg, spec)
            bar.update(2)
        elif spec.tabular:
            train_x, train_y, test_x, test_y = _read_tabular(cfg.dataset, data_root(cfg), spec)
            bar.update(2)
        else:
            root = data_root(cfg)
            reader = _READERS[cfg.dataset]
            splits = []
            for train in (True, False):
                splits += list(_torchvision_call(
                    cfg.dataset, root, lambda t=train: reader(root, t, cfg.download, verify)))
                bar.update(1)
            train_x, train_y, test_x, test_y = splits
        if cfg.resize > 0:
            bar.set_postfix_str(f"resizing to {cfg.resize}px")
            train_x, test_x = _resize(train_x, cfg.resize), _resize(test_x, cfg.resize)
            bar.update(1)
        bar.set_postfix_str("statistics")
        mean, std = _channel_stats(train_x)
        bar.update(1)
    for name, y in (("train", train_y), ("test", test_y)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
            raise ValueError(f"{cfg.dataset} {name} labels outside [0, {spec.num_classes})")
    return DataBundle(
        dataset=cfg.dataset, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=spec.num_classes, channels=int(train_x.shape[1]),
        image_size=int(train_x.shape[-1]), mean=mean, std=std)


Split = tuple[torch.Tensor, torch.Tensor]


def _read_extra(cfg: DataConfig, spec: DatasetSpec) -> tuple[torch.Tensor, ...]:
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


def _read_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
TABULAR_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")
# The label column (OpenML 44129 calls it "target"); every other column is a feature.
LABEL_COLUMNS: tuple[str, ...] = ("target", "label", "class")


def _read_tabular(dataset: str, root: Path, spec: DatasetSpec
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


_READERS: dict[str, Callable[[Path, bool, bool, bool], Split]] = {
    "cifar10": _read_cifar("CIFAR10"),
    "cifar100": _read_cifar("CIFAR100"),
    "svhn": _read_svhn,
    "mnist": _read_mnist("MNIST"),
    "fashionmnist": _read_mnist("FashionMNIST"),
}


def _torchvision_call(dataset: str, root: Path, fn: Callable[[], Split]) -> Split:
    """Turn torchvision's multi-line RuntimeErrors into our one-line ConfigError."""
    try:
        return fn()
    except RuntimeError as e:
        raise ConfigError(
            f"data.data_dir: {dataset} under {root} is missing or failed torchvision's md5 check "
            f"({str(e).splitlines()[0]}); replace the files or set data.download=true") from e


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _resize(x: torch.Tensor, side: int, chunk: int = 2048) -> torch.Tensor:
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


def _channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
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


# ----- batches -----------------------------------------------------------------------------

def steps_per_epoch(n_train: int, batch_size: int, drop_last: bool = True) -> int:
    """Optimizer steps in one epoch; with drop_last the incomplete last batch is skipped."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if drop_last and n_train < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {n_train} training examples")
    return n_train // batch_size if drop_last else math.ceil(n_train / batch_size)


def _check_shard(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")


def crop_padding(image_size: int) -> int:
    """Padding of the random crop: 4 px at 32 px (the standard), the same fraction otherwise."""
    return max(1, image_size // 8)


def train_batches(bundle: DataBundle, *, batch_size: int, epoch: int, seed: int, rank: int = 0,
                  world_size: int = 1, augment: bool, dataset: str | None = None,
                  device: torch.device | str = "cpu",
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's part of every global batch of one epoch, normalised float32 on `device`.

    `batch_size` is GLOBAL: each of the `world_size` ranks gets a contiguous slice of
    batch_size // world_size examples of the same global batch. Order and augmentation
    depend only on (seed, epoch), never on rank or world size. Incomplete batches are dropped.
    A streamed dataset (`FolderData`) serves them from its DataLoader.
    """
    if not isinstance(bundle, DataBundle):
        yield from bundle.train_batches(batch_size=batch_size, epoch=epoch, seed=seed, rank=rank,
                                        world_size=world_size, augment=augment, device=device)
        return
    _check_shard(rank, world_size)
    if batch_size % world_size:
        raise ValueError(f"global batch_size {batch_size} is not divisible by world_size {world_size}")
    n = bundle.n_train
    steps = steps_per_epoch(n, batch_size)
    local = batch_size // world_size
    order = torch.randperm(n, generator=stable_generator("order", seed, epoch))
    crop, flip = _AUGMENT.get(dataset or bundle.dataset, (False, False)) if augment else (False, False)
    pad = crop_padding(bundle.image_size)
    gen = stable_generator("augment", seed, epoch)
    used = steps * batch_size  # draw for the whole epoch up front: independent of sharding
    offsets = torch.randint(0, 2 * pad + 1, (used, 2), generator=gen) if crop else None
    flips = torch.rand(used, generator=gen) < 0.5 if flip else None
    data_device = bundle.train_x.device
    for step in range(steps):
        lo = step * batch_size + rank * local
        idx = order[lo:lo + local].to(data_device)
        x = bundle.train_x[idx].to(device, non_blocking=True)
        y = bundle.train_y[idx].to(device, non_blocking=True)
        if offsets is not None:
            x = _random_crop(x, offsets[lo:lo + local].to(x.device), pad)
        if flips is not None:
            flip_rows = flips[lo:lo + local].to(x.device).view(-1, 1, 1, 1)
            x = torch.where(flip_rows, x.flip(3), x)  # no boolean indexing: no host sync on GPU
        yield bundle.normalise(x), y


def sample_batch(bundle: DataBundle, size: int, *, key: int, seed: int, rank: int = 0,
                 world_size: int = 1, augment: bool, dataset: str | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's part of a GLOBAL batch of `size` examples drawn without replacement.

    For a batch outside the epoch's order (e.g. the larger batch of a DST update, DST
    appendix G). It is the first batch of the order and augmentation that `train_batches`
    would draw for epoch -(key + 1): a stream of its own (training epochs are >= 0), a pure
    function of (seed, key), sharded across ranks the same way.
    """
    if not isinstance(bundle, DataBundle):  # streamed: read in this process
        return bundle.sample_batch(size, key=key, seed=seed, rank=rank, world_size=world_size,
                                   augment=augment, device=device)
    return next(train_batches(bundle, batch_size=size, epoch=-(key + 1), seed=seed, rank=rank,
                              world_size=world_size, augment=augment, dataset=dataset, device=device))


def _random_crop(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Batched crop of the zero-padded images at per-image (dy, dx) offsets in [0, 2*pad]."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))  # zeros in raw pixel space, like RandomCrop(padding=)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # view (B, C, 2p+1, 2p+1, H, W)
    batch = torch.arange(x.shape[0], device=x.device)
    return windows[batch, :, offsets[:, 0], offsets[:, 1]]  # (B, C, H, W), one copy


def eval_shard(n_test: int, rank: int, world_size: int) -> torch.Tensor:
    """Test indices of one rank: contiguous chunks whose sizes differ by at most one."""
    _check_shard(rank, world_size)
    return torch.tensor_split(torch.arange(n_test), world_size)[rank]


def eval_batches(bundle: DataBundle, *, batch_size: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu",
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's contiguous chunk of the test set, in order, normalised on `device`.

    Every test example lands on exactly one rank, so summed correct counts / losses
    (all-reduced) give the exact test metrics. Every rank yields the SAME number of
    batches, ceil(ceil(n_test / world_size) / batch_size), each of at most batch_size
    examples (a rank may get an empty batch when the test set is smaller than that count),
    so collectives per batch cannot hang.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(bundle, DataBundle):
        yield from bundle.eval_batches(batch_size=batch_size, rank=rank, world_size=world_size,
                                       device=device)
        return
    mine = eval_shard(bundle.n_test, rank, world_size)
    n_batches = math.ceil(math.ceil(bundle.n_test / world_size) / batch_size)
    for idx in torch.tensor_split(mine, n_batches) if n_batches else ():
        idx = idx.to(bundle.test_x.device)
        x = bundle.test_x[idx].to(device, non_blocking=True)
        yield bundle.normalise(x), bundle.test_y[idx].to(device, non_blocking=True)
