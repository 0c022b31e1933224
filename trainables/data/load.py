"""Availability checks (before anything starts) and loading a dataset into memory.

Checksums: torchvision verifies CIFAR and SVHN files against md5 sums of the official
releases. `load_data(..., verify=True)` (the default) keeps that check. Hand-made files
(the tiny ones the tests write) cannot pass it, so `verify=False` loads through
subclasses of the same torchvision classes whose md5 sums are set to None: torchvision's
own code path then checks only that the files exist and parses them as usual.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from trainables.config import DATASETS, ConfigError, DataConfig
from trainables.data.bundle import DataBundle
from trainables.data.folder import check_folder, load_folder
from trainables.data.layout import data_root, expected_files
from trainables.data.readers import (
    EXTRA_READERS,
    READERS,
    channel_stats,
    read_digits,
    read_extra,
    read_tabular,
    resize_images,
    torchvision_call,
)


def check_available(cfg: DataConfig) -> None:
    """Fail before anything starts, with one line naming what is missing and how to fix it."""
    if DATASETS[cfg.dataset].streamed:  # ImageFolder trees (ImageNet): never downloaded
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


def load_data(cfg: DataConfig, *, progress: bool = True, verify: bool = True) -> DataBundle:
    """Read both splits into memory, resize once if asked, and compute train statistics.

    `verify=False` skips torchvision's md5 check of CIFAR/SVHN files (see module docstring);
    use it only for hand-made files. ImageFolder datasets (ImageNet) are not read into memory:
    they come back as a `trainables.data.folder.FolderData`, which streams them.
    """
    if DATASETS[cfg.dataset].streamed:
        return load_folder(cfg)  # type: ignore[return-value]  # the same batch API
    check_available(cfg)
    spec = DATASETS[cfg.dataset]
    steps = 3 + (cfg.resize > 0)
    with tqdm(total=steps, desc=f"preparing {cfg.dataset}", unit="step", disable=not progress,
              leave=False) as bar:
        bar.set_postfix_str("reading")
        if cfg.dataset == "digits":
            train_x, train_y, test_x, test_y = read_digits()
            bar.update(2)
        elif cfg.dataset in EXTRA_READERS:
            train_x, train_y, test_x, test_y = read_extra(cfg, spec)
            bar.update(2)
        elif spec.tabular:
            train_x, train_y, test_x, test_y = read_tabular(cfg.dataset, data_root(cfg), spec)
            bar.update(2)
        else:
            root = data_root(cfg)
            reader = READERS[cfg.dataset]
            splits = []
            for train in (True, False):
                splits += list(torchvision_call(
                    cfg.dataset, root, lambda t=train: reader(root, t, cfg.download, verify)))
                bar.update(1)
            train_x, train_y, test_x, test_y = splits
        if cfg.resize > 0:
            bar.set_postfix_str(f"resizing to {cfg.resize}px")
            train_x, test_x = resize_images(train_x, cfg.resize), resize_images(test_x, cfg.resize)
            bar.update(1)
        bar.set_postfix_str("statistics")
        mean, std = channel_stats(train_x)
        bar.update(1)
    for name, y in (("train", train_y), ("test", test_y)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
            raise ValueError(f"{cfg.dataset} {name} labels outside [0, {spec.num_classes})")
    return DataBundle(
        dataset=cfg.dataset, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=spec.num_classes, channels=int(train_x.shape[1]),
        image_size=int(train_x.shape[-1]), mean=mean, std=std)
