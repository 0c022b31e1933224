"""Edge-popup spaces (soft-iep.txt §3, appendix A.2): the ablations behind Tables 1 and 4."""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search_spaces.base import SearchSpace

# Table 1's k = d_0: the remaining fraction shrinks by 0.8 per column, k_i = 1 - 0.8^i
# (printed as .200 .360 .488 .590 .672 .738 .790 .832).
TABLE1_PRUNE_RATES: tuple[float, ...] = tuple(round(1 - 0.8**i, 6) for i in range(1, 9))

# §3 / A.1: "SGD for 100 epochs with batch size 128, weight decay 0.0001, momentum 0.9, and
# learning rate 0.1, decayed using a cosine annealing schedule"; signed Kaiming constant
# weights, Kaiming-uniform scores (Ramanujan et al. 2020).
PAPER_EP_SETUP: dict[str, object] = {
    "method.name": "edge_popup",
    "method.weight_init": "signed_constant",
    "method.score_init": "kaiming_uniform",
    "optim.name": "sgd",
    "optim.lr": 0.1,
    "optim.momentum": 0.9,
    "optim.weight_decay": 1e-4,
    "data.batch_size": 128,
    "schedule.name": "cosine",
    "schedule.epochs": 100,
    "schedule.warmup_epochs": 0,
}

EP_QUICK = SearchSpace(
    name="ep_quick",
    description="the default sweep: edge-popup on bundled scikit-learn digits, Conv-4, 3 prune rates (minutes on a laptop)",
    paper="soft-iep.txt Table 1, scaled down",
    base={**PAPER_EP_SETUP, "data.dataset": "digits", "model.name": "conv4", "schedule.epochs": 15,
          "data.batch_size": 64},
    grid={"method.prune_rate": (0.2, 0.488, 0.738)},
    optuna={"method.prune_rate": FloatDistribution(0.2, 0.9),
            "optim.lr": FloatDistribution(0.01, 0.5, log=True)},
)

EP_PRUNE_RATES = SearchSpace(
    name="ep_prune_rates",
    description="edge-popup dying ratio d_T and k - d_T across the prune rates k of Table 1 (ResNet-18, CIFAR-10)",
    paper="soft-iep.txt §3 Table 1 (4 seeds in the paper: --num-samples 4)",
    base={**PAPER_EP_SETUP, "data.dataset": "cifar10", "model.name": "resnet18"},
    grid={"method.prune_rate": TABLE1_PRUNE_RATES},
    optuna={"method.prune_rate": FloatDistribution(min(TABLE1_PRUNE_RATES), max(TABLE1_PRUNE_RATES))},
)

# Table 4: each row changes ONE hyperparameter of the baseline (k = 0.7 throughout).
TABLE4_VARIANTS: dict[str, dict[str, object]] = {
    "baseline": {},
    "batch_size=64": {"data.batch_size": 64},
    "batch_size=256": {"data.batch_size": 256},
    "batch_size=512": {"data.batch_size": 512},
    "lr=0.05": {"optim.lr": 0.05},
    "lr=0.2": {"optim.lr": 0.2},
    "lr=0.4": {"optim.lr": 0.4},
    "weight_decay=0": {"optim.weight_decay": 0.0},
    "weight_decay=1e-2": {"optim.weight_decay": 1e-2},
    "optimizer=lars": {"optim.name": "lars"},
    "score_init=kaiming_normal": {"method.score_init": "kaiming_normal"},
    "weight_init=scaled_signed_constant": {"method.weight_init": "scaled_signed_constant"},
    "warmup=5": {"schedule.warmup_epochs": 5},
    "warmup=10": {"schedule.warmup_epochs": 10},
}

EP_HPARAMS = SearchSpace(
    name="ep_hparams",
    description="edge-popup test accuracy and dying ratio under one-at-a-time hyperparameter changes (Conv8/ResNet18 x CIFAR-10/SVHN, k=0.7)",
    paper="soft-iep-appendix.txt A.2 Table 4",
    base={**PAPER_EP_SETUP, "method.prune_rate": 0.7, "data.dataset": "cifar10", "model.name": "conv8"},
    grid={"model.name": ("conv8", "resnet18"), "data.dataset": ("cifar10", "svhn")},
    variants=TABLE4_VARIANTS,
    optuna={
        "data.batch_size": CategoricalDistribution((64, 128, 256, 512)),
        "optim.lr": FloatDistribution(0.05, 0.4, log=True),
        "optim.weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "optim.name": CategoricalDistribution(("sgd", "lars")),
        "method.score_init": CategoricalDistribution(("kaiming_uniform", "kaiming_normal")),
        "method.weight_init": CategoricalDistribution(("signed_constant", "scaled_signed_constant")),
        "schedule.warmup_epochs": IntDistribution(0, 10),
    },
)

SPACES = (EP_QUICK, EP_PRUNE_RATES, EP_HPARAMS)
