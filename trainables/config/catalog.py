"""Static facts about datasets and models, so that validation runs before any data is touched.

One table each, keyed by the name the config takes: `DATASETS` (what a model needs to know
about a dataset) and `MODELS` (what validation needs to know about an architecture).
`trainables.models` builds the architectures and imports this module, not the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset before any file is read."""

    num_classes: int
    channels: int
    image_size: int
    train_size: int
    tabular: bool = False  # rows of features, stored as (N, features, 1, 1): MLPs only
    streamed: bool = False  # an ImageFolder tree read from disk per batch (trainables.data.folder)
    bundled: bool = False  # read without data.data_dir (shipped with a package, or made)


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(10, 1, 8, 1437, bundled=True),
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


@dataclass(frozen=True)
class ModelSpec:
    """What validation needs to know about an architecture before it is built."""

    min_side: int = 1  # smallest image side it takes (its pools or stages would reach 0px)
    pools: int = 0  # Conv-n: number of 2x2 max-pools, one per pair of convs (min side 2**pools)
    tabular: bool = False  # takes a tabular dataset's features (a flat input)
    torchvision: bool = False  # torchvision's definition as is: a 3-channel stem, width 1 only


_TORCHVISION = ModelSpec(min_side=32, torchvision=True)  # stops at 1x1 after /32

# Smallest sides: pools that would reach 0px (lenet5_caffe 16, cnn_small 18, vgg16_bn 16 with
# 4 max-pools); the rest stop at 1x1 in the last stage: /32 for torchvision's ImageNet models,
# /4 for the 3-stage CIFAR nets, /8 for resnet18, the patch size (2) for ConvMixer.
MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(tabular=True),
    **{f"conv{2 * pools}": ModelSpec(min_side=2**pools, pools=pools) for pools in (1, 2, 3, 4)},
    "resnet18": ModelSpec(min_side=8),
    # CIFAR ResNets (16/32/64 channels), the strong-lottery CIFAR models, the DST paper's zoo
    **{f"resnet{depth}": ModelSpec(min_side=4) for depth in (20, 32, 44, 56, 110)},
    "resnext29_32x4d": ModelSpec(min_side=4),
    "convmixer_256_8": ModelSpec(min_side=2),
    "mlp_small": ModelSpec(tabular=True),
    "mlp_large": ModelSpec(tabular=True),
    "cnn_small": ModelSpec(min_side=18),
    "lenet5_caffe": ModelSpec(min_side=16),
    "vgg16_bn": ModelSpec(min_side=16),
    # torchvision's definitions, built through the layer factory
    **{name: _TORCHVISION for name in ("resnet50", "resnet101", "wide_resnet50_2", "efficientnet_b0")},
}
# Smallest image side of each model (a view of MODELS for the tests that sweep it).
MODEL_MIN_SIDE: dict[str, int] = {name: spec.min_side for name, spec in MODELS.items()}


def model_input_error(model: str, width: float, dataset: str, resize: int) -> str | None:
    """One line saying why `model` cannot take `dataset` (resized to `resize`, 0: native), or None."""
    spec, data = MODELS[model], DATASETS[dataset]
    if data.tabular and not spec.tabular:
        tabular = ", ".join(name for name, m in MODELS.items() if m.tabular)
        return f"model.name: {dataset} is tabular; use one of {tabular}, not {model}"
    if data.tabular and resize:
        return f"data.resize: {dataset} is tabular and cannot be resized (set 0)"
    side = resize or data.image_size
    if spec.pools and side < spec.min_side:
        return (f"model.name: {model} pools {spec.pools} times and needs images of at least "
                f"{spec.min_side}px, but {dataset} gives {side}px (set data.resize, e.g. data.resize=32)")
    if side < spec.min_side:
        return (f"model.name: {model} needs images of at least {spec.min_side}px, but {dataset} gives "
                f"{side}px (set data.resize={max(spec.min_side, 32)})")
    if spec.torchvision and data.channels != 3:
        rgb = ", ".join(name for name, d in DATASETS.items() if d.channels == 3)
        return (f"model.name: {model} is torchvision's and takes 3-channel images, but {dataset} "
                f"has {data.channels}; use a 3-channel dataset ({rgb})")
    if spec.torchvision and width != 1:
        return (f"model.width: {model} is torchvision's fixed architecture and takes only width 1, "
                f"got {width:g} (wide_resnet50_2 is the wide ResNet-50)")
    return None
