"""ImageNet and Tiny-ImageNet, streamed from disk in torchvision's ImageFolder layout.

Why streamed: ImageNet's 1.28 M JPEGs do not fit the in-memory tensors of `trainables.data.order`
(about 140 GB decoded at 224 px), and decoding is the expensive part. A DataLoader decodes
and augments in worker processes while the GPU trains.

Layout (ImageFolder: one directory per class, any image files below it):

    DATA_DIR/imagenet/train/n01440764/*.JPEG      DATA_DIR/imagenet/val/n01440764/*.JPEG
    DATA_DIR/tiny-imagenet-200/train/n01443537/images/*.JPEG   .../val/n01443537/*.JPEG

(Tiny-ImageNet's download keeps its validation images in one folder with an annotation
file; move each into its class folder first, see the README.)

How it runs:
- **Workers from the trial's CPU share.** Ray sets OMP_NUM_THREADS to the CPUs a trial or
  DDP worker reserved; the loader takes that many minus one (the training process), so a
  trial never uses CPUs it did not reserve. Outside Ray: the machine's cores minus one.
- **Pinned memory on GPU**, and a non-blocking copy of each batch.
- **DistributedSampler under DDP**: each rank reads only its share of every global batch.
- **Determinism where it can hold.** The epoch's order is DistributedSampler's permutation
  for (a hash of the data seed) + epoch, the same for any number of ranks: global batch j
  holds the same examples whatever the world size. Each example's augmentation is drawn
  from a generator seeded by (data seed, epoch, example index), so it does not depend on
  the number of loader workers or ranks either. What cannot hold is bitwise equality
  across world sizes: ranks see a global batch in another order (float sums differ).

Batches leave the loader as uint8 and are normalised on the training device (ImageNet's
mean and std), like the in-memory datasets: a quarter of the host-to-device traffic.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from trainables.config import DATASETS, ConfigError, DataConfig
from trainables.data.layout import data_root
from trainables.data.order import check_shard, crop_padding, eval_shard
from trainables.rng import stable_seed

# Directory of each dataset under data.data_dir.
FOLDERS: dict[str, str] = {"imagenet": "imagenet", "tiny_imagenet": "tiny-imagenet-200"}
# Streamed datasets that plugins register (trainables.plugins): name -> the ImageFolder root
# (holding train/ and val/) for a config.
EXTRA_FOLDERS: dict[str, Callable[[DataConfig], Path]] = {}
SPLITS = ("train", "val")
# torchvision's ImageNet statistics, in [0, 1] units (Tiny-ImageNet is an ImageNet subset).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def folder_root(cfg: DataConfig) -> Path:
    if cfg.dataset in EXTRA_FOLDERS:
        return Path(EXTRA_FOLDERS[cfg.dataset](cfg))
    return data_root(cfg) / FOLDERS[cfg.dataset]


def check_folder(cfg: DataConfig) -> None:
    """Both splits exist and hold class folders with images; one line otherwise. Cheap: it
    looks into the first class folder only (ImageNet's train split has 1.28 M files)."""
    root = folder_root(cfg)
    if cfg.download:
        raise ConfigError(f"data.download: {cfg.dataset} is never downloaded (its licence needs a "
                          f"sign-up); put it under {root} in ImageFolder layout")
    for split in SPLITS:
        path = root / split
        classes = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
        if not classes:
            raise ConfigError(f"data.data_dir: dataset {cfg.dataset} not found, missing {path}/<class>/ "
                              f"(ImageFolder layout: {root}/{{train,val}}/<class>/*.JPEG)")
        if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in _first_files(classes[0])):
            raise ConfigError(f"data.data_dir: {classes[0]} holds no images (ImageFolder layout: "
                              f"{path}/<class>/*.JPEG)")


def _first_files(folder: Path, limit: int = 64) -> list[Path]:
    out: list[Path] = []
    for dirpath, _, files in os.walk(folder):
        out += [Path(dirpath) / f for f in files[:limit]]
        if out:
            break
    return out


def loader_workers() -> int:
    """DataLoader workers: the CPUs this process may use (Ray: what the trial reserved, via
    OMP_NUM_THREADS), minus the one that trains."""
    share = os.environ.get("OMP_NUM_THREADS", "")
    cpus = int(share) if share.isdigit() else (os.cpu_count() or 1)
    return max(0, cpus - 1)


def _transforms(dataset: str, side: int, train: bool) -> Any:
    """uint8 CHW tensors of `side` px: ImageNet's RandomResizedCrop/flip and resize+center crop;
    Tiny-ImageNet's padded random crop/flip at its native 64 px."""
    from torchvision.transforms import v2

    native = DATASETS[dataset].image_size
    if dataset == "imagenet":
        ops = ([v2.RandomResizedCrop(side, antialias=True), v2.RandomHorizontalFlip()] if train
               else [v2.Resize(round(side * 256 / 224), antialias=True), v2.CenterCrop(side)])
    else:
        ops = [] if side == native else [v2.Resize(side, antialias=True), v2.CenterCrop(side)]
        if train:
            ops += [v2.RandomCrop(side, padding=crop_padding(side)), v2.RandomHorizontalFlip()]
    return v2.Compose([v2.PILToTensor(), *ops, v2.ToDtype(torch.uint8)])


class _Seeded(Dataset):
    """Items are (index, epoch, seed): the augmentation of an example is a pure function of
    them, whichever process decodes it."""

    def __init__(self, folder: Any, transform: Any) -> None:
        self.folder = folder
        self.transform = transform

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, epoch, seed = item
        path, label = self.folder.samples[index]
        image = self.folder.loader(path)
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stays untouched
            torch.manual_seed(stable_seed("augment", seed, epoch, index))
            return self.transform(image), label


class _EpochItems(torch.utils.data.Sampler):
    """Wraps an index sampler: yields (index, epoch, seed) for `_Seeded`."""

    def __init__(self, indices: Any, epoch: int, seed: int) -> None:
        self.indices, self.epoch, self.seed = indices, epoch, seed

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return ((int(i), self.epoch, self.seed) for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True, eq=False)
class FolderData:
    """An ImageFolder dataset's two splits, read on demand; the engine's `DataBundle` API."""

    dataset: str
    root: Path
    train: Any  # torchvision ImageFolder
    test: Any
    num_classes: int
    image_size: int
    channels: int = 3
    device: torch.device = torch.device("cpu")
    workers: int | None = None  # None: loader_workers()

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_test(self) -> int:
        return len(self.test)

    @property
    def mean(self) -> torch.Tensor:
        return torch.tensor(MEAN)

    @property
    def std(self) -> torch.Tensor:
        return torch.tensor(STD)

    def to(self, device: torch.device | str) -> FolderData:
        """Batches will be pinned and copied to `device` (the data stays on disk)."""
        return dataclasses.replace(self, device=torch.device(device))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = (self.mean * 255).to(x.device).view(1, -1, 1, 1)
        std = (self.std * 255).to(x.device).view(1, -1, 1, 1)
        return x.to(torch.float32, copy=True).sub_(mean).div_(std)

    def _loader(self, dataset: Dataset, sampler: Any, batch_size: int, *, drop_last: bool,
                workers: int | None = None) -> DataLoader:
        n = self.workers if workers is None else workers
        n = loader_workers() if n is None else n
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=n, pin_memory=self.device.type == "cuda",
                          prefetch_factor=4 if n else None)

    def train_loader(self, *, batch_size: int, epoch: int, seed: int, rank: int = 0,
                     world_size: int = 1, augment: bool, workers: int | None = None) -> DataLoader:
        """This rank's loader for one epoch: batch_size // world_size examples per step."""
        check_shard(rank, world_size)
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by world_size {world_size}")
        indices = DistributedSampler(range(self.n_train), num_replicas=world_size, rank=rank,
                                     shuffle=True, seed=stable_seed("order", seed) % 2**62,
                                     drop_last=True)
        indices.set_epoch(epoch)
        dataset = _Seeded(self.train, _transforms(self.dataset, self.image_size, train=augment))
        return self._loader(dataset, _EpochItems(indices, epoch, seed), batch_size // world_size,
                            drop_last=True, workers=workers)

    def _batches(self, loader: DataLoader, device: torch.device | str
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            yield self.normalise(x), y.to(device, non_blocking=True)

    def train_batches(self, *, batch_size: int, epoch: int, seed: int, rank: int = 0,
                      world_size: int = 1, augment: bool, device: torch.device | str = "cpu",
                      **_: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Same contract as `trainables.data.train_batches` (global batch, drop_last)."""
        loader = self.train_loader(batch_size=batch_size, epoch=epoch, seed=seed, rank=rank,
                                   world_size=world_size, augment=augment)
        return self._batches(loader, device)

    def sample_batch(self, size: int, *, key: int, seed: int, rank: int = 0, world_size: int = 1,
                     augment: bool, device: torch.device | str = "cpu", **_: Any
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first batch of the order of epoch -(key + 1), read in this process (one batch
        does not pay for starting workers)."""
        loader = self.train_loader(batch_size=size, epoch=-(key + 1), seed=seed, rank=rank,
                                   world_size=world_size, augment=augment, workers=0)
        return next(self._batches(loader, device))

    def eval_batches(self, *, batch_size: int, rank: int = 0, world_size: int = 1,
                     device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's contiguous chunk of the validation split, in order (exact totals)."""
        mine = eval_shard(self.n_test, rank, world_size).tolist()
        dataset = _Seeded(self.test, _transforms(self.dataset, self.image_size, train=False))
        items = _EpochItems(range(len(mine)), 0, 0)
        return self._batches(self._loader(_Indexed(dataset, mine), items, batch_size, drop_last=False),
                             device)


class _Indexed(Dataset):
    """`_Seeded` items of a subset of indices (torch's Subset indexes with the item itself)."""

    def __init__(self, dataset: _Seeded, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, epoch, seed = item
        return self.dataset[(self.indices[index], epoch, seed)]


def load_folder(cfg: DataConfig) -> FolderData:
    """Scan both splits (file names only) and check the classes fit the dataset's head."""
    from torchvision.datasets import ImageFolder

    check_folder(cfg)
    root = folder_root(cfg)
    spec = DATASETS[cfg.dataset]
    train, test = (ImageFolder(str(root / split)) for split in SPLITS)
    if train.classes != test.classes:
        raise ConfigError(f"data.data_dir: {root}/train and {root}/val have different class folders "
                          f"({len(train.classes)} and {len(test.classes)})")
    if len(train.classes) > spec.num_classes:
        raise ConfigError(f"data.data_dir: {root}/train has {len(train.classes)} class folders, "
                          f"more than the {spec.num_classes} of {cfg.dataset}")
    return FolderData(dataset=cfg.dataset, root=root, train=train, test=test,
                      num_classes=spec.num_classes, image_size=cfg.resize or spec.image_size)
