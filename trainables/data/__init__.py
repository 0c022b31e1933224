"""Datasets: in-memory tensors with a deterministic, DDP-aware batch order, or ImageFolder trees
streamed from disk; re-exported here so `from trainables.data import ...` reads one place.

Why in memory: every dataset of the papers but ImageNet fits in RAM (CIFAR-10 is 150 MB as
uint8), so indexing one tensor per batch is faster on CPU than a DataLoader with worker
processes and is trivially reproducible. Images are stored compactly (uint8 for torchvision
data, float32 for the tiny digits set) and normalised per batch.

Modules, each importing only those above it:
- `layout`: where a dataset's files live and which it needs.
- `bundle`: `DataBundle`, both splits as tensors.
- `readers`: each on-disk format into tensors.
- `order`: an epoch's batches (order, augmentation, DDP shards), evaluation batches.
- `folder`: ImageNet / Tiny-ImageNet streamed from an ImageFolder tree.
- `load`: availability checks and `load_data`.
"""

from trainables.data.bundle import DataBundle
from trainables.data.folder import FolderData, loader_workers
from trainables.data.layout import DEFAULT_ROOT, TABULAR_SUFFIXES, data_root, expected_files
from trainables.data.load import check_available, load_data
from trainables.data.order import (
    _random_crop,
    check_shard,
    crop_padding,
    eval_batches,
    eval_shard,
    sample_batch,
    steps_per_epoch,
    train_batches,
)
from trainables.data.readers import LABEL_COLUMNS

__all__ = [
    "DEFAULT_ROOT", "LABEL_COLUMNS", "TABULAR_SUFFIXES", "DataBundle", "FolderData", "_random_crop", "check_available",
    "check_shard", "crop_padding", "data_root", "eval_batches", "eval_shard", "expected_files", "load_data",
    "loader_workers", "sample_batch", "steps_per_epoch", "train_batches",
]
