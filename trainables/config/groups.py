"""The fixed config groups: data, model, optimizer, schedule and run (`method` is per method).

Each field is a dotted key (`data.batch_size`) with its help, choices and range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainables.config.catalog import DATASETS, MODELS
from trainables.config.schema import SEED_MAX, ConfigError, param

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "lars")
SCHEDULES: tuple[str, ...] = ("cosine", "step", "constant")




@dataclass(frozen=True)
class DataConfig:
    dataset: str = param("digits", "dataset name", choices=DATASETS.keys())  # live: plugins add datasets
    data_dir: str = param("", "root directory holding torchvision-layout datasets (not needed for digits)")
    download: bool = param(False, "download a missing torchvision dataset into data_dir")
    verify: bool = param(True, "check torchvision's md5 sums of the dataset files")
    augment: bool = param(True, "standard augmentation (CIFAR: random crop 4 + horizontal flip; SVHN: crop; others: none)")
    batch_size: int = param(128, "global training batch size (split across DDP workers)", ge=1)
    eval_batch_size: int = param(1000, "evaluation batch size", ge=1)
    resize: int = param(0, "resize images to this side length (0 keeps the native size)", ge=0, le=16384)


@dataclass(frozen=True)
class ModelConfig:
    name: str = param("conv4", "architecture", choices=MODELS.keys())  # live: plugins add models
    width: float = param(1.0, "width multiplier (e.g. 2 for ResNet18x2)", gt=0, le=1024)
    mlp_hidden: tuple[int, ...] = param((300, 100), "hidden layer sizes of the MLP", ge=1, le=2**24)


@dataclass(frozen=True)
class OptimConfig:
    name: str = param("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = param(0.1, "peak learning rate", gt=0)
    momentum: float = param(0.9, "momentum (SGD, LARS)", ge=0, lt=1)
    nesterov: bool = param(False, "Nesterov momentum (SGD)")
    weight_decay: float = param(1e-4, "L2 weight decay (applied to scores in edge-popup, as in the paper)", ge=0)
    lars_trust_coeff: float = param(0.001, "LARS trust coefficient", gt=0)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = param("cosine", "learning-rate schedule after warm-up", choices=SCHEDULES)
    epochs: int = param(100, "training epochs (per cycle for iterative methods)", ge=1)
    warmup_epochs: int = param(0, "linear warm-up epochs from 0 to the peak LR", ge=0)
    milestones: tuple[int, ...] = param((), "epochs at which the step schedule multiplies the LR by gamma")
    milestone_fractions: tuple[float, ...] = param(
        (), "fractions of schedule.epochs at which the step schedule multiplies the LR by gamma "
            "(e.g. 0.5,0.75; instead of milestones, so the schedule follows a changed epoch count)")
    gamma: float = param(0.1, "step schedule factor", gt=0, le=1)

    def milestone_steps(self, steps_per_epoch: int) -> tuple[int, ...]:
        """Optimizer steps at which the step schedule multiplies the LR by gamma."""
        if self.milestone_fractions:
            return tuple(round(f * self.epochs * steps_per_epoch) for f in self.milestone_fractions)
        return tuple(m * steps_per_epoch for m in self.milestones)



@dataclass(frozen=True)
class RunConfig:
    seed: int = param(0, "seed for initialisation (and data order unless data_seed is set)", ge=0, le=SEED_MAX)
    data_seed: int | None = param(None, "seed for data order and augmentation (None: same as seed)",
                                  ge=0, le=SEED_MAX)
    device: str = param("auto", "auto picks cuda when available", choices=("auto", "cpu", "cuda"))
    amp: bool = param(False, "bfloat16 autocast on CUDA")
    deterministic: bool = param(True, "torch deterministic algorithms (exact CPU reruns)")
    max_steps_per_epoch: int = param(0, "cap on optimizer steps per epoch (0: the whole epoch; for smoke tests)", ge=0)
    eval_every: int = param(1, "evaluate every N epochs (the last epoch is always evaluated)", ge=1)
    checkpoint_every: int = param(1, "checkpoint every N epochs (the last epoch is always saved)", ge=1)
    masks_every: int = param(0, "also keep the mask every N epochs as masks/epoch_XXXX.parquet (0: cycle ends "
                                "only); for overlap curves over training (soft-iep-appendix A.3, Fig. 8)", ge=0)
    # Inference export and latency of a sparse trial's final network (trainables.export).
    export: bool = param(True, "export the final sparse network for inference (masks folded into the weights, "
                               "safetensors + architecture JSON) beside its mask")
    infer_seconds: float = param(10.0, "time bound of the CPU inference-latency measurement of the exported "
                                       "network against dense (infer_ms, infer_ms_dense, infer_speedup; 0: off)",
                                 ge=0)


@dataclass(frozen=True)
class SparsityConfig:
    """The mask pattern shared by every sparse method (rules in trainables.sparse.nm_pattern)."""

    pattern: str = param("unstructured", "unstructured, or N:M: N kept in every group of M consecutive weights "
                                         "along the input dimension (conv: along in_channels*kh*kw), e.g. 2:4")
    misfit: str = param("refuse", "a masked layer whose input dimension M does not divide: refuse the config, "
                                  "or keep that layer unstructured at density N/M", choices=("refuse", "unstructured"))

    def validate(self, exp: Any) -> None:
        from trainables.sparse.nm_pattern import pattern_problem

        try:
            problem = pattern_problem(exp)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if problem:
            raise ConfigError(problem)
