"""Lottery-ticket spaces by iterative magnitude pruning (understanding-imp.txt §2-4, appendices C-E).

Table 1's regimes (all IMP with 20% of the remaining weights pruned per round, 25 rounds, reset
to initialisation, global magnitude, affine BatchNorm):
  LeNet-300-100 / MNIST   Adam 1.2e-3, batch 60,   25 epochs, constant,        Kaiming uniform, wd 0
  ResNet-20 / CIFAR-10    SGD-m 0.1,   batch 128,  85 epochs, ×0.1 at 56, 71,  Kaiming normal,  wd 1e-5
  Conv-4 / CIFAR-10       SGD-m 0.01,  batch 128,  75 epochs, cosine,          Kaiming normal,  wd 1e-5
  ResNet-50 / ImageNet    SGD-m 0.4,   batch 1024, 90 epochs, ×0.1 at 30,60,80, Kaiming normal, wd 1e-5,
                          one-shot 30%
`TABLE1` holds them as overrides. The milestones are written as fractions of the epochs, so a
shortened run keeps the schedule's shape. The paper keeps Table 1's LR while varying the batch
size (§2.1), so the spaces do too. Seeds come from --num-samples (3 in the paper).
"""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search_spaces.base import SearchSpace

IMP_DEFAULTS: dict[str, object] = {
    "method.name": "imp",
    "method.rounds": 25,
    "method.prune_fraction": 0.2,
    "method.scope": "global",
    "method.reinit_baseline": True,
}

TABLE1: dict[str, dict[str, object]] = {
    "lenet_mnist": {"data.dataset": "mnist", "model.name": "mlp", "model.mlp_hidden": (300, 100),
                    "optim.name": "adam", "optim.lr": 1.2e-3, "optim.weight_decay": 0.0, "data.batch_size": 60,
                    "schedule.epochs": 25, "schedule.name": "constant", "method.weight_init": "kaiming_uniform"},
    "resnet20_cifar10": {"data.dataset": "cifar10", "model.name": "resnet20", "optim.name": "sgd",
                         "optim.momentum": 0.9, "optim.lr": 0.1, "optim.weight_decay": 1e-5,
                         "data.batch_size": 128, "schedule.epochs": 85, "schedule.name": "step",
                         "schedule.milestone_fractions": (56 / 85, 71 / 85),
                         "method.weight_init": "kaiming_normal"},
    "conv4_cifar10": {"data.dataset": "cifar10", "model.name": "conv4", "optim.name": "sgd", "optim.momentum": 0.9,
                      "optim.lr": 0.01, "optim.weight_decay": 1e-5, "data.batch_size": 128, "schedule.epochs": 75,
                      "schedule.name": "cosine", "method.weight_init": "kaiming_normal"},
    "resnet50_imagenet": {"data.dataset": "imagenet", "model.name": "resnet50", "optim.name": "sgd",
                          "optim.momentum": 0.9, "optim.lr": 0.4, "optim.weight_decay": 1e-5,
                          "data.batch_size": 1024, "schedule.epochs": 90, "schedule.name": "step",
                          "schedule.milestone_fractions": (30 / 90, 60 / 90, 80 / 90),
                          "method.weight_init": "kaiming_normal", "method.rounds": 2,
                          "method.one_shot_sparsity": 0.3},
}

# Fig. 1: batch sizes 128 ... 2048 (×2), with and without a 10-epoch linear warm-up.
FIG1_BATCH_SIZES: tuple[int, ...] = (128, 256, 512, 1024, 2048)
FIG1_WARMUPS: tuple[int, ...] = (0, 10)

# λ_r acts only with a repellent variant on, so the variant is searched with it.
OPTUNA = {
    "data.batch_size": IntDistribution(16, 2048, log=True),
    "method.repel": CategoricalDistribution(("off", "all", "previous")),
    "method.repel_lambda": FloatDistribution(-2.0, 4.0),
}

IMP_STABILITY = SearchSpace(
    name="imp_stability",
    description="IMP against its reinit baseline per round across batch sizes 128-2048 x warm-up 0/10 epochs, "
                "with the copies' linear-mode instability (ResNet-20, CIFAR-10, 25 rounds)",
    paper="understanding-imp.txt §2 Fig. 1 (accuracy), Fig. 2 (instability), Fig. 4 (distances), Fig. 6 "
          "(thresholds)",
    base={**IMP_DEFAULTS, **TABLE1["resnet20_cifar10"], "method.lmc": True},
    grid={"data.batch_size": FIG1_BATCH_SIZES, "schedule.warmup_epochs": FIG1_WARMUPS},
    optuna={**OPTUNA, "schedule.warmup_epochs": CategoricalDistribution(FIG1_WARMUPS)},
)

# Fig. 3: stable IMP (batch 2048) with J_r (λ_r = 2) and without; unstable IMP (batch 128)
# attracted to earlier optima (λ_r = -1); appendix D Fig. 17: the previous-optimum-only variant.
# Every variant at both batch sizes (a superset of the figure's 4 curves x 2 panels).
REPULSION_VARIANTS: dict[str, dict[str, object]] = {
    "imp": {},
    "repel_all_2": {"method.repel": "all", "method.repel_lambda": 2.0},
    "repel_previous_2": {"method.repel": "previous", "method.repel_lambda": 2.0},
    "attract_all_-1": {"method.repel": "all", "method.repel_lambda": -1.0},
}

IMP_REPULSION = SearchSpace(
    name="imp_repulsion",
    description="IMP with the repellent loss (λ_r=2, all earlier optima or the previous one), the attractive one "
                "(λ_r=-1) and none, at batch 128 (unstable) and 2048 (stable), each with its reinit baseline "
                "(ResNet-20, CIFAR-10)",
    paper="understanding-imp.txt §3 Fig. 3; appendix D Figs. 13-17",
    base={**IMP_DEFAULTS, **TABLE1["resnet20_cifar10"]},
    grid={"data.batch_size": (128, 2048)},
    variants=REPULSION_VARIANTS,
    optuna=OPTUNA,
)

IMP_WEIGHT_DECAY = SearchSpace(
    name="imp_weight_decay",
    description="semistable IMP (batch 512, no warm-up) with weight decay 1e-5 and without: accuracy and pruning "
                "threshold per round (ResNet-20, CIFAR-10)",
    paper="understanding-imp.txt §4.2 Fig. 7",
    base={**IMP_DEFAULTS, **TABLE1["resnet20_cifar10"], "data.batch_size": 512, "schedule.warmup_epochs": 0},
    grid={"optim.weight_decay": (1e-5, 0.0)},
    optuna={**OPTUNA, "optim.weight_decay": FloatDistribution(0.0, 1e-3)},
)

IMP_RESNET50 = SearchSpace(
    name="imp_resnet50",
    description="one-shot IMP to 30% sparsity at LR 0.4 and 0.1 (ResNet-50, ImageNet; needs data.data_dir)",
    paper="understanding-imp.txt appendix C (ResNet-50 table)",
    base={**IMP_DEFAULTS, **TABLE1["resnet50_imagenet"]},
    grid={"optim.lr": (0.4, 0.1)},
    optuna={"optim.lr": FloatDistribution(0.05, 0.4, log=True), "data.batch_size": IntDistribution(256, 2048, log=True)},
)

# LeNet-300-100 on bundled digits (1437 training images): Table 1's LeNet regime (Adam 1.2e-3,
# constant LR, Kaiming uniform, no weight decay), 8 rounds; a small (16) and a large (256) batch;
# IMP alone and with J_r (λ_r = 2); every round's reinit baseline; 2 seeds with --num-samples 2.
# A round is ~350 Adam steps at either batch size (bs 16: 89 steps x 4 epochs; bs 256: 5 steps x
# 70 epochs): with 50 steps a round at bs 256 the reinit arm stops at 0.75-0.80 train accuracy
# and "IMP beats reinit" would only say the reinit is underfitted. Batch size and epochs change
# together, so they are variants.
QUICK_ROUNDS = {16: 4, 256: 70}  # batch size -> epochs per round (~350 steps each)
IMP_QUICK = SearchSpace(
    name="imp_quick",
    description="IMP vs reinit per round (both arms trained ~350 Adam steps a round, train accuracy of both "
                "logged), with and without the repellent loss (λ_r=2), batch 16 and 256, LeNet-300-100 on "
                "bundled digits, 8 rounds (minutes on 2 cores)",
    paper="understanding-imp.txt Figs. 1, 3, 4 and appendix D Fig. 14 / E Fig. 18, scaled down",
    base={**IMP_DEFAULTS, **TABLE1["lenet_mnist"], "data.dataset": "digits", "method.rounds": 8,
          "run.checkpoint_every": 5},
    variants={f"{name}/bs{bs}": {**REPULSION_VARIANTS[name], "data.batch_size": bs, "schedule.epochs": epochs}
              for name in ("imp", "repel_all_2") for bs, epochs in QUICK_ROUNDS.items()},
    optuna={**OPTUNA, "data.batch_size": IntDistribution(16, 512, log=True)},  # digits: 1437 training images
)

SPACES = (IMP_QUICK, IMP_STABILITY, IMP_REPULSION, IMP_WEIGHT_DECAY, IMP_RESNET50)
