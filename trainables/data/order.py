"""The batches of an epoch: a deterministic, DDP-aware order and augmentation over a `DataBundle`.

Determinism: the epoch's order and its augmentation are drawn from generators seeded by
a stable hash of (seed, epoch) for the whole GLOBAL batch; each DDP rank takes its
contiguous slice. So N workers see exactly the examples (and crops) one worker would.
A streamed dataset (`trainables.data.folder.FolderData`) brings its own batches; these
functions hand over to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from trainables.data.bundle import DataBundle
from trainables.rng import stable_generator

# Augmentation per dataset: CIFAR random crop (zero padding) + horizontal flip, SVHN crop only
# (a flipped digit is another digit), MNIST-likes and digits none.
_AUGMENT: dict[str, tuple[bool, bool]] = {  # name -> (crop, flip)
    "cifar10": (True, True),
    "cifar100": (True, True),
    "svhn": (True, False),
}


def steps_per_epoch(n_train: int, batch_size: int, drop_last: bool = True) -> int:
    """Optimizer steps in one epoch; with drop_last the incomplete last batch is skipped."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if drop_last and n_train < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {n_train} training examples")
    return n_train // batch_size if drop_last else math.ceil(n_train / batch_size)


def check_shard(rank: int, world_size: int) -> None:
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
    check_shard(rank, world_size)
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
    check_shard(rank, world_size)
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
