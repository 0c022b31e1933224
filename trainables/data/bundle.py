"""A dataset held in memory as tensors: both splits, their statistics, per-batch normalisation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


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
