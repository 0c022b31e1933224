"""Dynamic sparse training spaces (fantastic-weights-dst.txt §5, appendices A, G, I, J).

Figures compare DST runs with static sparse training and the dense model. Those are not a
Cartesian product (a static run has no criterion, the dense run no density), so the Fig. 1 /
Fig. 5 spaces list their points as named variants: "magnitude+random d=0.05", "static
d=0.05", "dense" (DST at density 1 with no update: the same training as method.name=dense,
which a test checks). Seeds come from --num-samples (5 in the paper). Spaces whose points
form a product (λ, batch size, schedule, scope) use grid axes.

Panels (A.2; every one SGD momentum 0.9, Nesterov, batch 128, LR ×0.1 at 50% and 75%):
  small-MLP / Higgs       mlp_small    lr 0.01  wd 5e-4  100 epochs  ER
  large-MLP / CIFAR-10    mlp_large    lr 0.01  wd 5e-4  100 epochs  ER
  small-CNN / CIFAR-10    cnn_small    lr 0.01  wd 5e-4  100 epochs  ERK
  LeNet-5-Caffe / FMNIST  lenet5_caffe lr 0.01  wd 5e-4  100 epochs  ERK
  ResNet-56 / CIFAR-10    resnet56     lr 0.1   wd 1e-4  200 epochs  ERK (also CIFAR-100)
  VGG-16-BN / CIFAR-100   vgg16_bn     lr 0.01  wd 1e-4  200 epochs  ERK
The spaces default to large-MLP / CIFAR-10 (the model of the appendix studies); `PANELS`
holds the other rows as --set overrides (see README "Dynamic sparse training").
DST defaults (A.2, Table 3): ρ = 0.5 with cosine decay, Δt = 800, every conv/linear layer
sparse (the paper's code masks all of them, biases and norms stay dense).
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search_spaces.base import SearchSpace
from trainables.config import DST_CRITERIA

# Fig. 1 / Table 3 densities and Fig. 5's update periods (25 ... 6400, ×2).
FIG1_DENSITIES: tuple[float, ...] = (0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
FIG5_DENSITIES: tuple[float, ...] = (0.1, 0.2)
UPDATE_PERIODS: tuple[int, ...] = tuple(25 * 2**i for i in range(9))
# The criteria of Fig. 1 (the paper's code spec 030c); sensitivity (appendix B) and random
# (the J_r reference) are in DST_CRITERIA too.
FIG1_CRITERIA: tuple[str, ...] = ("magnitude", "set", "mest", "rsensitivity", "snip")
GROWTHS: tuple[str, ...] = ("random", "gradient")
# appendix A.3: the λ values of the paper's code spec 001o; 0 is the magnitude criterion.
MEST_LAMBDAS: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)

TRAINING: dict[str, Any] = {
    "optim.name": "sgd", "optim.momentum": 0.9, "optim.nesterov": True, "data.batch_size": 128,
    "schedule.name": "step", "schedule.milestone_fractions": (0.5, 0.75), "schedule.gamma": 0.1,
    "schedule.warmup_epochs": 0,
}
DST_DEFAULTS: dict[str, Any] = {
    "method.name": "dst", "method.prune_fraction": 0.5, "method.prune_schedule": "cosine",
    "method.update_period": 800, "method.scope": "local",
}


def _panel(model: str, dataset: str, lr: float, weight_decay: float, epochs: int,
           distribution: str) -> dict[str, Any]:
    """One panel of the paper's Fig. 1: a model on its dataset with its training recipe."""
    return {"model.name": model, "data.dataset": dataset, "optim.lr": lr, "optim.weight_decay": weight_decay,
            "schedule.epochs": epochs, "method.distribution": distribution}


PANELS: dict[str, dict[str, Any]] = {
    "mlp_higgs": _panel("mlp_small", "higgs", 0.01, 5e-4, 100, "er"),
    "mlp_cifar10": _panel("mlp_large", "cifar10", 0.01, 5e-4, 100, "er"),
    "cnn_cifar10": _panel("cnn_small", "cifar10", 0.01, 5e-4, 100, "erk"),
    "lenet_fashionmnist": _panel("lenet5_caffe", "fashionmnist", 0.01, 5e-4, 100, "erk"),
    "resnet56_cifar10": _panel("resnet56", "cifar10", 0.1, 1e-4, 200, "erk"),
    "resnet56_cifar100": _panel("resnet56", "cifar100", 0.1, 1e-4, 200, "erk"),
    "vgg_cifar100": _panel("vgg16_bn", "cifar100", 0.01, 1e-4, 200, "erk"),
}

OPTUNA: dict[str, Any] = {
    "method.update_period": IntDistribution(25, 6400, log=True),
    "method.prune_fraction": FloatDistribution(0.05, 0.9),
    "method.mest_lambda": FloatDistribution(1e-3, 1e3, log=True),
    "method.criterion": CategoricalDistribution(FIG1_CRITERIA),
    "method.growth": CategoricalDistribution(GROWTHS),
}


def criteria_points(criteria: tuple[str, ...], densities: tuple[float, ...],
                    periods: tuple[int, ...] = ()) -> dict[str, dict[str, Any]]:
    """Named points: every criterion × growth × density (× Δt), static per density (× no Δt), dense."""
    points: dict[str, dict[str, Any]] = {}
    for d in densities:
        for dt in periods or (None,):
            tag = f"d={d}" + (f" dt={dt}" if dt is not None else "")
            period = {} if dt is None else {"method.update_period": dt}
            for c in criteria:
                for g in GROWTHS:
                    points[f"{c}+{g} {tag}"] = {"method.criterion": c, "method.growth": g,
                                                "method.density": d, **period}
        points[f"static d={d}"] = {"method.density": d, "method.update_period": 0}
    points["dense"] = {"method.density": 1.0, "method.update_period": 0}
    return points


BASE = {**TRAINING, **DST_DEFAULTS, **PANELS["mlp_cifar10"]}

DST_CRITERIA_SPACE = SearchSpace(
    name="dst_criteria",
    description="DST pruning criteria × growth × density against static sparse and dense (large-MLP, CIFAR-10)",
    paper="fantastic-weights-dst.txt §5.2 Fig. 1 / Table 3 (5 seeds: --num-samples 5; other panels: README)",
    base=BASE,
    variants=criteria_points(FIG1_CRITERIA, FIG1_DENSITIES),
    optuna=OPTUNA,
)

DST_UPDATE_PERIOD = SearchSpace(
    name="dst_update_period",
    description="DST accuracy against the update period Δt = 25 ... 6400 at densities 0.1 and 0.2",
    paper="fantastic-weights-dst.txt §5.3 Fig. 5 (Table 3's 'Fig. 4' row)",
    base=BASE,
    variants=criteria_points(FIG1_CRITERIA, FIG5_DENSITIES, UPDATE_PERIODS),
    optuna=OPTUNA,
)

DST_MEST_LAMBDA = SearchSpace(
    name="dst_mest_lambda",
    description="MEST with random growth: λ of |θ| + λ|∇θL| against density (λ = 0 is magnitude)",
    paper="fantastic-weights-dst.txt appendix A.3 Fig. 7",
    base={**BASE, "method.criterion": "mest", "method.growth": "random"},
    grid={"method.mest_lambda": MEST_LAMBDAS, "method.density": FIG1_DENSITIES},
    optuna={"method.mest_lambda": FloatDistribution(1e-3, 1e3, log=True),
            "method.density": FloatDistribution(0.05, 0.5, log=True)},
)

DST_BATCH_SIZE = SearchSpace(
    name="dst_batch_size",
    description="gradient criteria and batch size: batch 128 vs 1024 (lr 0.08, Δt 100) vs a 1024 batch for the update only",
    paper="fantastic-weights-dst.txt appendix G Fig. 12-13 (LeNet-5-Caffe, FashionMNIST)",
    base={**TRAINING, **DST_DEFAULTS, **PANELS["lenet_fashionmnist"]},
    grid={"method.criterion": FIG1_CRITERIA, "method.growth": GROWTHS, "method.density": FIG1_DENSITIES},
    variants={
        "batch=128": {},
        "batch=1024": {"data.batch_size": 1024, "optim.lr": 0.08, "method.update_period": 100},
        "update batch=1024": {"method.update_batch_size": 1024},
    },
    optuna={"method.update_batch_size": CategoricalDistribution((0, 256, 512, 1024)),
            "method.update_period": IntDistribution(25, 6400, log=True)},
)

DST_SCHEDULE = SearchSpace(
    name="dst_schedule",
    description="ρ_t schedule (cosine, linear ×0.99 per 600 steps, constant) and batch 256 against Δt, random growth",
    paper="fantastic-weights-dst.txt appendix J Fig. 16 (large-MLP, CIFAR-10; density 0.2 as Fig. 5)",
    base={**BASE, "method.growth": "random", "method.density": 0.2},
    grid={"method.update_period": UPDATE_PERIODS, "method.criterion": FIG1_CRITERIA},
    variants={
        "cosine": {"method.prune_schedule": "cosine"},
        "linear": {"method.prune_schedule": "linear", "method.linear_factor": 0.99, "method.linear_every": 600},
        "constant": {"method.prune_schedule": "constant"},
        "cosine batch=256": {"method.prune_schedule": "cosine", "data.batch_size": 256},
    },
    optuna={"method.prune_schedule": CategoricalDistribution(("cosine", "linear", "constant")),
            "method.update_period": IntDistribution(25, 6400, log=True),
            "method.prune_fraction": FloatDistribution(0.05, 0.9)},
)

DST_GLOBAL_LOCAL = SearchSpace(
    name="dst_global_local",
    description="global against local pruning (and growth) at densities 0.05, 0.1, 0.15 (ResNet-56, CIFAR-10)",
    paper="fantastic-weights-dst.txt appendix I Fig. 15 (SET left out as in the paper; Δt 100 and random "
          "growth as the paper's code spec 007a)",
    base={**TRAINING, **DST_DEFAULTS, **PANELS["resnet56_cifar10"], "method.update_period": 100,
          "method.growth": "random"},
    grid={"method.scope": ("local", "global"), "method.criterion": ("magnitude", "mest", "rsensitivity", "snip"),
          "method.density": (0.05, 0.1, 0.15)},
    optuna={"method.scope": CategoricalDistribution(("local", "global")),
            "method.update_period": IntDistribution(25, 6400, log=True)},
)

# Scaled down to run in minutes on 2 cores: the bundled digits (1437 training images, 22
# steps of 64 per epoch), an MLP 64-256-256-10, 30 epochs = 660 steps. Δt = 50 steps ≈ 2.3
# epochs, the paper's ratio (800 steps of 128 ≈ 2.3 CIFAR-10 epochs), so a run updates 13 times.
QUICK_DENSITIES: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05)
DST_QUICK = SearchSpace(
    name="dst_quick",
    description="every DST criterion × growth against static sparse and dense on bundled digits (MLP, 4 densities)",
    paper="fantastic-weights-dst.txt Fig. 1 and 6a, scaled down",
    base={**TRAINING, **DST_DEFAULTS, "data.dataset": "digits", "model.name": "mlp",
          "model.mlp_hidden": (256, 256), "data.batch_size": 64, "schedule.epochs": 30, "optim.lr": 0.05,
          "optim.weight_decay": 5e-4, "method.distribution": "er", "method.update_period": 50,
          "run.checkpoint_every": 10},  # a checkpoint per epoch costs more than the epoch here
    variants=criteria_points(DST_CRITERIA, QUICK_DENSITIES),
    optuna={k: v for k, v in OPTUNA.items() if k != "method.criterion"}
    | {"method.criterion": CategoricalDistribution(DST_CRITERIA)},
)

DST_DT_QUICK = SearchSpace(
    name="dst_dt_quick",
    description="DST accuracy and ITOP against the update period Δt = 10 ... 100 steps at D = 0.2 on bundled digits "
                "(magnitude pruning, random and gradient growth; static and dense)",
    paper="fantastic-weights-dst.txt Fig. 5 and Fig. 11, scaled down (Δt = 50 steps ≈ the paper's 800 at CIFAR-10)",
    base={**DST_QUICK.base, "schedule.epochs": 20},
    variants=criteria_points(("magnitude",), (0.2,), (10, 25, 50, 100)),
    optuna=DST_QUICK.optuna,
)

SPACES = (DST_QUICK, DST_DT_QUICK, DST_CRITERIA_SPACE, DST_UPDATE_PERIOD, DST_MEST_LAMBDA, DST_BATCH_SIZE, DST_SCHEDULE,
          DST_GLOBAL_LOCAL)
