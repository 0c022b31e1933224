"""Typed experiment config: one tree of dataclasses, validated, hashable, flat <-> nested.

Every knob lives here once. The CLI (`--set a.b=c`), the search spaces and the MLflow
params all use the same dotted keys, produced by `to_flat` and read back by `from_flat`.
The `method` group is polymorphic: `method.name` picks the dataclass that holds the other
`method.*` keys, so a key that belongs to another method is an error, not a silent no-op.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ConfigError(ValueError):
    """Bad configuration: the message is one line naming the key and what is allowed."""


# Integers go to torch, numpy and Parquet as 64-bit: an integer key without a narrower range
# has this one. Seeds: numpy's legacy RandomState and Optuna's samplers take [0, 2**32 - 1].
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SEED_MAX = 2**32 - 1


def param(default: Any, help: str, *, choices: tuple[Any, ...] | None = None,
          ge: float | None = None, gt: float | None = None, lt: float | None = None,
          le: float | None = None) -> Any:
    """A dataclass field with help text and the constraints `validate` enforces."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "lt": lt, "le": le}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset before any file is read."""

    num_classes: int
    channels: int
    image_size: int
    train_size: int
    tabular: bool = False  # rows of features, stored as (N, features, 1, 1): MLPs only
    streamed: bool = False  # an ImageFolder tree read from disk per batch (trainables.folder_data)



# Static facts, so that validation can run before any data is touched.
DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(10, 1, 8, 1437),
    "mnist": DatasetSpec(10, 1, 28, 60000),
    "fashionmnist": DatasetSpec(10, 1, 28, 60000),
    "cifar10": DatasetSpec(10, 3, 32, 50000),
    "cifar100": DatasetSpec(100, 3, 32, 50000),
    "svhn": DatasetSpec(10, 3, 32, 73257),
    # OpenML 44129 (fantastic-weights-dst.txt Table 4): 940,160 rows of 24 features, binary
    # target, split 70/15/15; train_size is the 70% of the full file (a smaller file works).
    "higgs": DatasetSpec(2, 24, 1, 658112, tabular=True),
    # ImageFolder trees, streamed (too large for memory); image_size is the training crop.
    "imagenet": DatasetSpec(1000, 3, 224, 1281167, streamed=True),
    "tiny_imagenet": DatasetSpec(200, 3, 64, 100000, streamed=True),
}
# Models that take a tabular dataset's features (a flat input).
TABULAR_MODELS: tuple[str, ...] = ("mlp", "mlp_small", "mlp_large")

MODELS: tuple[str, ...] = (
    "mlp", "conv2", "conv4", "conv6", "conv8", "resnet18",
    # CIFAR ResNets (16/32/64 channels), the strong-lottery CIFAR models, the DST paper's zoo
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnext29_32x4d", "convmixer_256_8",
    "mlp_small", "mlp_large", "cnn_small", "lenet5_caffe", "vgg16_bn",
    # torchvision's definitions, built through the layer factory
    "resnet50", "resnet101", "wide_resnet50_2", "efficientnet_b0",
)
# Number of 2x2 max-pools in each Conv-n network (one per pair of convs).
CONV_POOLS: dict[str, int] = {"conv2": 1, "conv4": 2, "conv6": 3, "conv8": 4}
# torchvision's architectures as torchvision defines them: a 3-channel stem, no width knob.
TORCHVISION_MODELS: tuple[str, ...] = ("resnet50", "resnet101", "wide_resnet50_2", "efficientnet_b0")
# Smallest image side each zoo model takes, so validation can refuse it before anything is
# built (trainables.models imports this module, not the other way round). Pools that would
# reach 0px: lenet5_caffe 16, cnn_small 18, vgg16_bn 16 (4 max-pools); the rest stop at 1x1
# in the last stage: /32 for torchvision's ImageNet models, /4 for the 3-stage CIFAR nets,
# the patch size (2) for ConvMixer. MLPs take any size.
MODEL_MIN_SIDE: dict[str, int] = {
    **{f"resnet{d}": 4 for d in (20, 32, 44, 56, 110)},
    "resnext29_32x4d": 4, "convmixer_256_8": 2, "mlp_small": 1, "mlp_large": 1,
    "cnn_small": 18, "lenet5_caffe": 16, "vgg16_bn": 16,
    **{name: 32 for name in TORCHVISION_MODELS},
}


def _model_input_error(model: str, width: float, dataset: str, side: int) -> str | None:
    """One line saying why `model` cannot take `dataset`'s images at `side` px, or None."""
    spec = DATASETS[dataset]
    need = MODEL_MIN_SIDE.get(model, 1)
    if side < need:
        return (f"model.name: {model} needs images of at least {need}px, but {dataset} gives "
                f"{side}px (set data.resize={max(need, 32)})")
    if model in TORCHVISION_MODELS and spec.channels != 3:
        rgb = ", ".join(name for name, d in DATASETS.items() if d.channels == 3)
        return (f"model.name: {model} is torchvision's and takes 3-channel images, but {dataset} "
                f"has {spec.channels}; use a 3-channel dataset ({rgb})")
    if model in TORCHVISION_MODELS and width != 1:
        return (f"model.width: {model} is torchvision's fixed architecture and takes only width 1, "
                f"got {width:g} (wide_resnet50_2 is the wide ResNet-50)")
    return None


OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "lars")
SCHEDULES: tuple[str, ...] = ("cosine", "step", "constant")
WEIGHT_INITS: tuple[str, ...] = (
    "signed_constant", "scaled_signed_constant", "kaiming_normal", "kaiming_uniform",
)
SCORE_INITS: tuple[str, ...] = ("kaiming_uniform", "kaiming_normal")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = param("digits", "dataset name", choices=tuple(DATASETS))
    data_dir: str = param("", "root directory holding torchvision-layout datasets (not needed for digits)")
    download: bool = param(False, "download a missing torchvision dataset into data_dir")
    verify: bool = param(True, "check torchvision's md5 sums of the dataset files")
    augment: bool = param(True, "standard augmentation (CIFAR: random crop 4 + horizontal flip; SVHN: crop; others: none)")
    batch_size: int = param(128, "global training batch size (split across DDP workers)", ge=1)
    eval_batch_size: int = param(1000, "evaluation batch size", ge=1)
    resize: int = param(0, "resize images to this side length (0 keeps the native size)", ge=0, le=16384)


@dataclass(frozen=True)
class ModelConfig:
    name: str = param("conv4", "architecture", choices=MODELS)
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
class MethodConfig:
    """Base of the per-method configs; `name` selects the subclass in METHODS."""

    name: str = "dense"
    masked: ClassVar[bool] = False

    def cycle_count(self) -> int:
        """Cycles of `schedule.epochs` epochs each (iterative methods override)."""
        return 1

    def validate(self, exp: ExperimentConfig) -> None:
        """Cross-field rules of this method (single-field ranges are checked generically)."""


@dataclass(frozen=True)
class DenseConfig(MethodConfig):
    name: str = param("dense", "method")
    weight_init: str = param("kaiming_normal", "weight initialisation", choices=("kaiming_normal", "kaiming_uniform"))


@dataclass(frozen=True)
class CyclesConfig(MethodConfig):
    """Cycles of iterative pruning: k_i = 1 - (1 - m)(1 - p)^(i-1) (soft-iep.txt §4.1)."""

    cycles: int = param(8, "M: number of cycles, each of schedule.epochs epochs", ge=1, le=1000)
    shrinkage: float | None = param(
        None, "p: fraction of the remaining edges pruned per cycle, k_i = 1-(1-p)^i (default 0.2; "
              "leave unset when target_remaining is given)", gt=0, lt=1)
    target_remaining: float | None = param(
        None, "remaining ratio to reach at the last cycle; sets p (e.g. 0.3 in 3 cycles, as on ImageNet)",
        gt=0, lt=1)
    first_prune_rate: float | None = param(None, "m: prune rate of cycle 1 (default: p)", ge=0, lt=1)

    def cycle_count(self) -> int:
        return self.cycles

    def effective_shrinkage(self) -> float:
        """p as given, derived from target_remaining, or 0.2."""
        from trainables.sparse.schedules import shrinkage_for_target

        if self.target_remaining is not None:
            return shrinkage_for_target(self.target_remaining, self.cycles, self.first_prune_rate)
        return 0.2 if self.shrinkage is None else self.shrinkage

    def cycle_prune_rates(self) -> tuple[float, ...]:
        """k_1 .. k_M."""
        from trainables.sparse.schedules import iterative_prune_rates

        return iterative_prune_rates(self.effective_shrinkage(), self.cycles, self.first_prune_rate)

    def validate(self, exp: ExperimentConfig) -> None:
        if self.shrinkage is not None and self.target_remaining is not None:
            raise ConfigError("method.shrinkage, method.target_remaining: set one of them, not both "
                              f"(got {self.shrinkage} and {self.target_remaining})")
        try:
            self.cycle_prune_rates()
        except ValueError as e:
            raise ConfigError(f"method.target_remaining: {e}") from None


SUPERMASK_WEIGHT_INITS: tuple[str, ...] = (*WEIGHT_INITS, "pretrained")


@dataclass(frozen=True)
class SupermaskConfig(MethodConfig):
    """What the strong-lottery methods share: frozen weights θ0, scores, coats, exploration tracking."""

    masked: ClassVar[bool] = True
    weight_init: str = param("signed_constant", "frozen weight initialisation (pretrained: from method.pretrained_path)",
                             choices=SUPERMASK_WEIGHT_INITS)
    score_init: str = param("kaiming_uniform", "score initialisation", choices=SCORE_INITS)
    pretrained_path: str = param("", "weights file for weight_init=pretrained: a state dict (.pt/.pth, read "
                                     "weights-only) or .safetensors, with the model's layer names")
    coats: int = param(1, "N: multicoated supermask, W = θ0 ⊙ Σ_j m_kj with k_j spanned linearly from k to 1 "
                          "(soft-iep-appendix C.2.2; 1 = plain)", ge=1, le=16)
    track_visits: bool = param(True, "count per edge the steps it is selected (visit counts, appendix C.3.3)")
    rank_sample: int = param(200, "edges sampled for the score-rank trajectories (Fig. 5b; 0: off)", ge=0)

    def validate(self, exp: ExperimentConfig) -> None:
        if self.weight_init == "pretrained" and not self.pretrained_path:
            raise ConfigError("method.pretrained_path: weight_init=pretrained needs a weights file "
                              "(a state dict .pt/.pth or .safetensors)")
        if self.pretrained_path and self.weight_init != "pretrained":
            raise ConfigError(f"method.pretrained_path: only read with method.weight_init=pretrained "
                              f"(got weight_init={self.weight_init})")


@dataclass(frozen=True)
class EdgePopupConfig(SupermaskConfig):
    """Edge-popup (Ramanujan et al. 2020) as described in soft-iep.txt §2-3."""

    name: str = param("edge_popup", "method")
    prune_rate: float = param(0.5, "k: fraction of each layer's weights PRUNED (density = 1 - k)", ge=0, lt=1)
    progressive_stages: int = param(
        1, "raise the prune rate in this many equal stages of training up to prune_rate "
           "(EP with a progressive prune rate, appendix C.1 Table 5; 1: plain EP)", ge=1, le=1000)
    progressive_schedule: str = param("exp", "remaining ratio across the stages: exp (geometric) or lin (linear)",
                                      choices=("exp", "lin"))


@dataclass(frozen=True)
class IterativeEdgePopupConfig(SupermaskConfig, CyclesConfig):
    """Iterative edge-popup, hard and soft (soft-iep.txt §4, Table 3, Algorithm 1).

    Table 3's rows: hard FT = pruning=hard, lr_reset=hold; hard SRw = hard + score_reset=rewind;
    hard SRi = hard + score_reset=reinit; hard LR = hard (inherit, rewind); soft LR = the
    default; soft LR + zero init = zero_init=true; soft SRw + zero init = score_reset=rewind,
    zero_init=true. soft + score_reset=rewind is EP run afresh at each cycle's k_i.
    """

    name: str = param("iep", "method")
    pruning: str = param("soft", "soft: every edge may be selected in every cycle; hard: edges outside the "
                                 "previous cycle's mask are removed for good", choices=("soft", "hard"))
    score_reset: str = param("inherit", "scores at a cycle start: inherit s*_(i-1), rewind to s_0 (SRw) or "
                                        "reinit from the score init (SRi)", choices=("inherit", "rewind", "reinit"))
    lr_reset: str = param("rewind", "LR at a cycle start: rewind (schedule restarts, optimizer state reset) or "
                                    "hold (the last LR is kept, fine-tuning FT)", choices=("rewind", "hold"))
    zero_init: bool = param(False, "zero the scores of edges the previous cycle did not select (s <- m* ⊙ s)")

    def validate(self, exp: ExperimentConfig) -> None:
        SupermaskConfig.validate(self, exp)
        CyclesConfig.validate(self, exp)


@dataclass(frozen=True)
class DenseLRRConfig(CyclesConfig):
    """Dense lottery ticket with LR rewinding (Renda et al. 2020; soft-iep-appendix C.2.1).

    Weights are trained; at each cycle boundary the smallest-magnitude weights are pruned to
    k_i, the survivors keep their trained values, and the LR schedule restarts.
    """

    masked: ClassVar[bool] = True
    name: str = param("dense_lrr", "method")
    weight_init: str = param("kaiming_normal", "weight initialisation", choices=("kaiming_normal", "kaiming_uniform"))
    scope: str = param("global", "magnitude ranking over all layers together (global) or per layer (layerwise)",
                       choices=("global", "layerwise"))

    def cycle_count(self) -> int:
        return self.cycles + 1  # one dense cycle first, then one cycle per prune rate k_1..k_M

    def cycle_prune_rates(self) -> tuple[float, ...]:
        return (0.0, *CyclesConfig.cycle_prune_rates(self))


DST_CRITERIA: tuple[str, ...] = ("magnitude", "set", "mest", "sensitivity", "rsensitivity", "snip", "random")


@dataclass(frozen=True)
class DSTConfig(MethodConfig):
    """Dynamic sparse training (fantastic-weights-dst.txt §3): a sparse net whose mask is pruned
    and regrown every Δt steps. update_period=0 is static sparse training (same init, no
    updates); density=1 trains every weight, exactly as method.name=dense does.
    """

    masked: ClassVar[bool] = True
    name: str = param("dst", "method")
    density: float = param(0.2, "D: fraction of all conv/linear weights KEPT active (sparsity = 1 - D)",
                           gt=0, le=1)
    distribution: str = param("erk", "per-layer densities: erk (kernel dims included; the same as er on "
                                     "linear layers), er, or uniform", choices=("erk", "er", "uniform"))
    dense_first: bool = param(False, "keep the first conv/linear layer dense (it counts toward D)")
    dense_last: bool = param(False, "keep the last conv/linear layer dense (it counts toward D)")
    weight_init: str = param("kaiming_normal", "weight initialisation before masking",
                             choices=("kaiming_normal", "kaiming_uniform"))
    criterion: str = param("magnitude", "prune criterion: magnitude |θ|, set (equal counts by sign), mest "
                                        "|θ|+λ|∇|, sensitivity |∇|/|θ|, rsensitivity |θ|/|∇|, snip |θ∇|, random",
                           choices=DST_CRITERIA)
    growth: str = param("random", "growth: random (uniform over inactive weights) or gradient "
                                  "(largest |∂L/∂(m⊙θ)|)", choices=("random", "gradient"))
    update_period: int = param(800, "Δt: optimizer steps between topology updates (0: no updates, "
                                     "static sparse training)", ge=0)
    update_end: int = param(0, "T: no update at or after optimizer step T, the horizon of the cosine "
                                "decay of ρ (0: the end of training)", ge=0)
    prune_fraction: float = param(0.5, "ρ: fraction of each layer's ACTIVE weights pruned (and regrown) at "
                                       "an update, before decay", gt=0, le=1)
    prune_schedule: str = param("cosine", "decay of ρ_t: cosine ρ/2·(1+cos(πt/T)), linear (× linear_factor "
                                          "every linear_every steps, appendix J) or constant",
                                choices=("cosine", "linear", "constant"))
    linear_factor: float = param(0.99, "factor of the linear ρ schedule", gt=0, le=1)
    linear_every: int = param(600, "steps between two factors of the linear ρ schedule", ge=1)
    scope: str = param("local", "prune and grow per layer (local) or over all layers together (global, "
                                "appendix I)", choices=("local", "global"))
    mest_lambda: float = param(1.0, "λ of the MEST criterion", ge=0)
    update_batch_size: int = param(0, "0: criteria and growth use the step's batch gradient; N: a separate "
                                      "batch of N examples drawn only for the update (appendix G)", ge=0)
    skip_step_on_update: bool = param(False, "no optimizer step on an update step (as RigL)")
    jaccard_every: int = param(0, "K: besides the first update, record every criterion's prune set every K "
                                   "updates (appendix K; 0: the first update only)", ge=0)

    def validate(self, exp: ExperimentConfig) -> None:
        spec = DATASETS[exp.data.dataset]
        if self.update_batch_size > spec.train_size:
            raise ConfigError(f"method.update_batch_size: {self.update_batch_size} is larger than the "
                              f"{spec.train_size} training examples of {exp.data.dataset}")
        if self.update_end and self.update_period and self.update_end <= self.update_period:
            raise ConfigError(f"method.update_end: {self.update_end} leaves no update before it with "
                              f"method.update_period={self.update_period} (0 means the end of training)")


IMP_PHASES: tuple[str, ...] = ("copy", "reinit", "imp")


@dataclass(frozen=True)
class ImpConfig(MethodConfig):
    """Lottery tickets by iterative magnitude pruning (understanding-imp.txt §2-4, Table 1).

    Each round trains, prunes `prune_fraction` of the remaining prunable weights by magnitude
    and resets the survivors to θ_0 (or rewinds them to step t); every round may also train
    its reinit baseline (same mask, fresh weights) and a second copy with other SGD noise for
    linear mode connectivity. Round r runs as up to three engine cycles, in the order of
    IMP_PHASES (the IMP training last, so the run's last report is IMP's).
    """

    masked: ClassVar[bool] = True
    name: str = param("imp", "method")
    rounds: int = param(25, "R: IMP rounds (round 1 trains the dense network), each of schedule.epochs epochs",
                        ge=1, le=1000)
    prune_fraction: float = param(0.2, "fraction of the REMAINING prunable weights removed per round "
                                       "(ceil(p·remaining), as open_lth)", gt=0, lt=1)
    scope: str = param("global", "magnitude ranking over all prunable layers together (global) or per layer "
                                 "(layerwise)", choices=("global", "layerwise"))
    one_shot_sparsity: float | None = param(
        None, "one-shot pruning: after the dense round, prune straight to this SPARSITY (fraction removed, "
              "e.g. 0.3 for ResNet-50 in Table 1); needs rounds=2", gt=0, lt=1)
    rewind_epoch: int = param(0, "reset survivors to their values after this many epochs of round 1 "
                                 "(0 with rewind_step=0: to the initialisation)", ge=0)
    rewind_step: int = param(0, "reset survivors to their values after this many optimizer steps of round 1 "
                                "(set rewind_epoch or rewind_step, not both)", ge=0)
    weight_init: str = param("kaiming_normal", "weight initialisation (Table 1: LeNet kaiming_uniform, the "
                                               "others kaiming_normal)", choices=("kaiming_normal", "kaiming_uniform"))
    prune_shortcuts: bool = param(False, "also prune 1x1 shortcut (downsample) convs (BatchNorm is never pruned)")
    prune_biases: bool = param(False, "also rank and prune the biases of the pruned conv/linear layers with their "
                                      "weights (the paper prunes weights only; a bias dies with its neuron)")
    affine_bn: bool = param(True, "affine BatchNorm (appendix A.3: all normalisation affine)")
    reinit_baseline: bool = param(True, "train the random-reinit baseline (same mask, fresh weights) in every "
                                        "pruned round, inside the trial")
    lmc: bool = param(False, "train a second copy of every round from the same state with another data seed "
                             "and measure linear mode connectivity (instability)")
    copy_data_seed: int | None = param(None, "data seed of the second copy (None: the run's data seed + 1)",
                                       ge=0, le=SEED_MAX)
    lmc_points: int = param(20, "evenly spaced points on the linear path (endpoints included)", ge=2, le=1000)
    lmc_successive: bool = param(True, "also interpolate between the IMP optima of successive rounds (Fig. 8)")
    bn_batches: int = param(0, "training batches used to recompute BatchNorm statistics at each point "
                               "(0: one whole epoch)", ge=0)
    repel: str = param("off", "repellent loss J_r over earlier IMP optima: off, all (Θ = every earlier "
                              "optimum) or previous (Θ = the last one only)", choices=("off", "all", "previous"))
    repel_lambda: float = param(2.0, "λ_r of J_r (2 in the paper; < 0 attracts)")
    repel_device: str = param("device", "where J_r is computed: device (the earlier optima projected on the "
                                        "current mask go to the accelerator) or cpu (they stay in host memory)",
                              choices=("device", "cpu"))
    optima_store: str = param("memory", "where the earlier rounds' optima (IMP and reinit, each on its own mask: "
                                        "<= 1/p model sizes in all) live: host memory, or disk (memory-mapped "
                                        "files in a temporary directory, paged in when used); never on the "
                                        "accelerator; checkpoints hold them either way", choices=("memory", "disk"))
    hist_bins: int = param(64, "bins of the surviving-weight histograms", ge=2, le=10000)

    def phases(self) -> tuple[str, ...]:
        """Phases of a pruned round, in training order; round 1 (dense) has no reinit."""
        return tuple(p for p in IMP_PHASES if p == "imp" or (p == "copy" and self.lmc)
                     or (p == "reinit" and self.reinit_baseline))

    def cycle_count(self) -> int:
        per_round = len(self.phases())
        return self.rounds * per_round - (1 if self.reinit_baseline else 0)

    def validate(self, exp: ExperimentConfig) -> None:
        if self.one_shot_sparsity is not None and self.rounds != 2:
            raise ConfigError(f"method.rounds: one-shot pruning (method.one_shot_sparsity={self.one_shot_sparsity}) "
                              f"trains a dense round and one pruned round; set method.rounds=2, got {self.rounds}")
        if self.rewind_epoch and self.rewind_step:
            raise ConfigError(f"method.rewind_step: set rewind_epoch or rewind_step, not both (got "
                              f"{self.rewind_epoch} and {self.rewind_step})")
        if self.rewind_epoch >= exp.schedule.epochs and self.rewind_epoch:
            raise ConfigError(f"method.rewind_epoch: {self.rewind_epoch} must be smaller than schedule.epochs "
                              f"({exp.schedule.epochs}), the length of round 1")
        spe = DATASETS[exp.data.dataset].train_size // exp.data.batch_size  # drop_last, as the engine
        if exp.run.max_steps_per_epoch:
            spe = min(spe, exp.run.max_steps_per_epoch)
        if self.rewind_step >= exp.schedule.epochs * spe and self.rewind_step:
            raise ConfigError(f"method.rewind_step: {self.rewind_step} must be smaller than the "
                              f"{exp.schedule.epochs * spe} optimizer steps of round 1 "
                              f"(schedule.epochs={exp.schedule.epochs} x {spe} steps at data.batch_size="
                              f"{exp.data.batch_size})")
        if self.repel != "off" and self.rounds < 2:
            raise ConfigError(f"method.repel: {self.repel} repels earlier rounds' optima and needs "
                              f"method.rounds >= 2, got {self.rounds}")


METHODS: dict[str, type[MethodConfig]] = {
    "edge_popup": EdgePopupConfig,
    "dense": DenseConfig,
    "iep": IterativeEdgePopupConfig,
    "dense_lrr": DenseLRRConfig,
    "dst": DSTConfig,
    "imp": ImpConfig,
}


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


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    method: MethodConfig = field(default_factory=EdgePopupConfig)
    run: RunConfig = field(default_factory=RunConfig)

    GROUPS: ClassVar[tuple[str, ...]] = ("data", "model", "optim", "schedule", "method", "run")

    @property
    def total_epochs(self) -> int:
        """Epochs over all cycles: what the last report's `epoch` reaches."""
        return self.method.cycle_count() * self.schedule.epochs

    # ----- flat view -------------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        """Dotted keys -> plain values (tuples stay tuples), in declaration order."""
        flat: dict[str, Any] = {}
        for group in self.GROUPS:
            for f in dataclasses.fields(getattr(self, group)):
                flat[f"{group}.{f.name}"] = getattr(getattr(self, group), f.name)
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> ExperimentConfig:
        """Build and validate a config from dotted keys; missing keys take defaults."""
        return cls().with_overrides(flat)

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        """A new validated config with dotted-key overrides; values may be strings (CLI)."""
        groups: dict[str, dict[str, Any]] = {g: {} for g in self.GROUPS}
        for key, value in overrides.items():
            group, _, name = str(key).partition(".")
            if group not in groups or not name or "." in name:
                raise ConfigError(_unknown_key_message(str(key), self._allowed_keys(overrides)))
            groups[group][name] = value
        method = self.method
        if "name" in groups["method"]:
            new_name = _coerce("method.name", groups["method"]["name"], str)
            if new_name not in METHODS:
                raise ConfigError(f"method.name: {new_name!r} is not one of {', '.join(METHODS)}")
            if new_name != method.name:
                method = METHODS[new_name]()
        parts: dict[str, Any] = {}
        for group in self.GROUPS:
            current = method if group == "method" else getattr(self, group)
            parts[group] = _replace_group(group, current, groups[group], self._allowed_keys(overrides))
        cfg = ExperimentConfig(**parts)
        cfg.validate()
        return cfg

    def _allowed_keys(self, overrides: Mapping[str, Any]) -> list[str]:
        name = overrides.get("method.name", self.method.name)
        method_cls = METHODS.get(str(name), type(self.method))
        keys = []
        for group in self.GROUPS:
            dc = method_cls if group == "method" else type(getattr(self, group))
            keys += [f"{group}.{f.name}" for f in dataclasses.fields(dc)]
        return keys

    @classmethod
    def coerce(cls, key: str, value: Any) -> Any:
        """Type one value for `key` (CLI string -> declared type) without cross-field checks."""
        group, _, name = key.partition(".")
        if group == "method":
            dcs: list[type] = list(METHODS.values())
        elif group in cls.GROUPS:
            dcs = [type(getattr(cls(), group))]
        else:
            dcs = []
        for dc in dcs:
            hints = _field_types(dc)
            if name in hints and name in {f.name for f in dataclasses.fields(dc)}:
                return _coerce(key, value, hints[name])
        raise ConfigError(_unknown_key_message(key, cls()._allowed_keys({})))

    # ----- identity ----------------------------------------------------------------------
    def non_default(self) -> dict[str, Any]:
        """Flat keys whose value differs from the default (method defaults of its own class)."""
        default = ExperimentConfig(method=METHODS[self.method.name]()).to_flat()
        flat = self.to_flat()
        diff = {k: v for k, v in flat.items() if default.get(k) != v}
        diff["method.name"] = self.method.name
        return diff

    def hash(self) -> str:
        """Stable name of the experiment: adding a knob with a default keeps old hashes."""
        payload = json.dumps(self.non_default(), sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps({g: dataclasses.asdict(getattr(self, g)) for g in self.GROUPS}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        nested = json.loads(text)
        return cls.from_flat({f"{g}.{k}": v for g, d in nested.items() for k, v in d.items()})

    # ----- validation --------------------------------------------------------------------
    def validate(self) -> None:
        """Field constraints plus the cross-field rules; raises ConfigError."""
        for group in self.GROUPS:
            obj = getattr(self, group)
            for f in dataclasses.fields(obj):
                _check_constraints(f"{group}.{f.name}", getattr(obj, f.name), f.metadata)
        spec = DATASETS[self.data.dataset]
        if self.schedule.warmup_epochs >= self.schedule.epochs and self.schedule.warmup_epochs > 0:
            raise ConfigError(
                f"schedule.warmup_epochs: {self.schedule.warmup_epochs} must be smaller than "
                f"schedule.epochs ({self.schedule.epochs})")
        if any(m < 1 or m >= self.schedule.epochs for m in self.schedule.milestones):
            raise ConfigError(f"schedule.milestones: {list(self.schedule.milestones)} must lie in "
                              f"[1, schedule.epochs={self.schedule.epochs}) to take effect")
        if self.data.batch_size > spec.train_size:
            raise ConfigError(f"data.batch_size: {self.data.batch_size} is larger than the "
                              f"{spec.train_size} training images of {self.data.dataset}")
        if self.schedule.name == "step" and not (self.schedule.milestones or self.schedule.milestone_fractions):
            raise ConfigError("schedule.milestones: the step schedule needs at least one milestone, e.g. 50,75")
        if any(not 0 < f < 1 for f in self.schedule.milestone_fractions):
            raise ConfigError(f"schedule.milestone_fractions: {list(self.schedule.milestone_fractions)} "
                              f"must lie in (0, 1)")
        if self.schedule.milestones and self.schedule.milestone_fractions:
            raise ConfigError("schedule.milestone_fractions: set milestones or milestone_fractions, not both")
        if spec.tabular and self.model.name not in TABULAR_MODELS:
            raise ConfigError(f"model.name: {self.data.dataset} is tabular; use one of "
                              f"{', '.join(TABULAR_MODELS)}, not {self.model.name}")
        if spec.tabular and self.data.resize:
            raise ConfigError(f"data.resize: {self.data.dataset} is tabular and cannot be resized (set 0)")
        if any(h < 1 for h in self.model.mlp_hidden):
            raise ConfigError(f"model.mlp_hidden: sizes must be >= 1, got {list(self.model.mlp_hidden)}")
        side = self.data.resize or spec.image_size
        pools = CONV_POOLS.get(self.model.name, 0)
        if pools and side < 2**pools:
            raise ConfigError(
                f"model.name: {self.model.name} pools {pools} times and needs images of at least "
                f"{2**pools}px, but {self.data.dataset} gives {side}px (set data.resize, e.g. data.resize=32)")
        if self.model.name == "resnet18" and side < 8:
            raise ConfigError(f"model.name: resnet18 needs images of at least 8px, got {side}px (set data.resize=32)")
        problem = _model_input_error(self.model.name, self.model.width, self.data.dataset, side)
        if problem:
            raise ConfigError(problem)
        self.method.validate(self)
        if self.data.dataset != "digits" and not self.data.data_dir and not self.data.download:
            raise ConfigError(
                f"data.data_dir: dataset {self.data.dataset} is read from a directory; set "
                f"data.data_dir=PATH (or data.download=true to fetch it)")


# ----- helpers ---------------------------------------------------------------------------

def _field_types(dc: type) -> dict[str, Any]:
    return typing.get_type_hints(dc)


def _replace_group(group: str, current: Any, values: dict[str, Any], allowed: list[str]) -> Any:
    if not values:
        return current
    hints = _field_types(type(current))
    names = {f.name for f in dataclasses.fields(current)}
    changes = {}
    for name, value in values.items():
        key = f"{group}.{name}"
        if name not in names:
            raise ConfigError(_unknown_key_message(key, allowed))
        changes[name] = _coerce(key, value, hints[name])
    return dataclasses.replace(current, **changes)


def _unknown_key_message(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    group = key.partition(".")[0]
    in_group = [k for k in allowed if k.partition(".")[0] == group]
    if in_group:
        return f"unknown config key {key!r}{hint}; allowed {group}.* keys: {', '.join(in_group)}"
    groups = sorted({k.partition(".")[0] for k in allowed})
    return f"unknown config key {key!r}{hint}; keys start with one of: {', '.join(groups)}"


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert a CLI string or a search-space value to the field's declared type."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return _coerce(key, value, inner[0])
    if origin is tuple:
        elem = args[0]
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            items: list[Any] = [s for s in (p.strip() for p in text.split(",")) if s]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key}: expected a list of {elem.__name__}, got {value!r}")
        return tuple(_coerce(key, v, elem) for v in items)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy / torch scalars from search spaces
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            out = float(value)
        else:
            try:
                out = float(str(value).strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(out):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return out
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value.strip()
    raise ConfigError(f"{key}: unsupported type {typ!r}")  # pragma: no cover - schema bug


def _check_constraints(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    for item in value if isinstance(value, tuple) else (value,):
        _check_number(key, item, meta)


def _check_number(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Both ends of the key's range (an integer's default range: 64 bits), named in the message."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    is_int = isinstance(value, int)
    lo = meta["ge"] if meta.get("ge") is not None else meta.get("gt")
    hi = meta["le"] if meta.get("le") is not None else meta.get("lt")
    lo_b = "[" if meta.get("ge") is not None else "("
    hi_b = "]" if meta.get("le") is not None else ")"
    if is_int:  # an integer's ends are inclusive
        lo_b, hi_b = ("[" if lo is None else lo_b), ("]" if hi is None else hi_b)
        lo, hi = INT64_MIN if lo is None else lo, INT64_MAX if hi is None else hi
    allowed = f"{lo_b}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{hi_b}"
    bounds = [("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
              ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b)]
    for name, sym, ok in bounds:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key}: {value!r} must be {sym} {bound} (allowed range {allowed})")
    if is_int and not INT64_MIN <= value <= INT64_MAX:
        raise ConfigError(f"{key}: {value!r} is not a 64-bit integer (allowed range {allowed})")


VARIANT_KEY = "variant"


def resolve_tune_config(tune_config: Mapping[str, Any],
                        variants: Mapping[str, Mapping[str, Any]]) -> ExperimentConfig:
    """A trial's flat config (dotted keys, maybe a named variant of a space) -> validated config.

    The one place that reads a trial's config: the trial, the tracker and the sweep's
    dry run and results all call it, so they cannot disagree.
    """
    flat = {k: v for k, v in tune_config.items() if k != VARIANT_KEY}
    name = tune_config.get(VARIANT_KEY)
    if name is not None:
        if name not in variants:
            raise ConfigError(f"variant: {name!r} is not one of {', '.join(variants) or 'none'}")
        flat.update(variants[name])
    return ExperimentConfig.from_flat(flat)


def describe_keys(cfg: ExperimentConfig | None = None) -> list[tuple[str, Any, str]]:
    """(key, default, help) for every key of every method, for `--help-config`."""
    cfg = cfg or ExperimentConfig()
    rows: list[tuple[str, Any, str]] = []
    for group in ExperimentConfig.GROUPS:
        if group == "method":
            seen: set[str] = set()
            for mname, mcls in METHODS.items():
                for f in dataclasses.fields(mcls):
                    if f.name == "name" and "name" in seen:
                        continue
                    seen.add(f.name)
                    helptext = f.metadata.get("help", "")
                    if f.name == "name":
                        rows.append(("method.name", cfg.method.name, f"method: one of {', '.join(METHODS)}"))
                    else:
                        rows.append((f"method.{f.name}", f.default, f"[{mname}] {helptext}"))
            continue
        obj = getattr(cfg, group)
        for f in dataclasses.fields(obj):
            rows.append((f"{group}.{f.name}", getattr(obj, f.name), f.metadata.get("help", "")))
    return rows
