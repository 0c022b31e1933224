"""Strong-lottery spaces (soft-iep.txt, soft-iep-appendix.txt): edge-popup's Tables 1, 2 and 4,
iterative EP's Fig. 3b / 5a, progressive EP (Table 5), multicoats (Fig. 4a) and architectures
(Fig. 4b)."""

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
    description="edge-popup on bundled scikit-learn digits, Conv-4, 3 prune rates (minutes on a laptop)",
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

# ----- iterative edge-popup (§4-5) ------------------------------------------------------------

# §5 CIFAR: ResNet-18, SGD for 100 epochs per cycle, cosine, batch 128, lr 0.1, wd 1e-4,
# momentum 0.9, shrinkage p = 0.2; appendix D.2: "100 epochs x 20 cycles" (remaining 0.8^20).
PAPER_IEP_SETUP: dict[str, object] = {
    **{k: v for k, v in PAPER_EP_SETUP.items() if k not in ("method.name", "method.weight_init",
                                                             "method.score_init")},
    "method.name": "iep",
    "method.cycles": 20,
    "method.shrinkage": 0.2,
}

# Table 3, one row per variant. EP at each k_i is "soft pruning with score rewinding": every
# cycle restarts from (θ0, s_0) at k_i, which is EP run afresh (§4.2 "it degenerates to EP").
IEP_METHODS: dict[str, dict[str, object]] = {
    "ep": {"method.score_reset": "rewind"},
    "hard_ft": {"method.pruning": "hard", "method.lr_reset": "hold"},
    "hard_srw": {"method.pruning": "hard", "method.score_reset": "rewind"},
    "hard_sri": {"method.pruning": "hard", "method.score_reset": "reinit"},
    "hard_lr": {"method.pruning": "hard"},
    "soft_lr": {},
    "soft_lr_zero_init": {"method.zero_init": True},
    "soft_srw_zero_init": {"method.score_reset": "rewind", "method.zero_init": True},
}

IEP_OPTUNA = {
    "method.shrinkage": FloatDistribution(0.1, 0.5),
    "method.pruning": CategoricalDistribution(("soft", "hard")),
    "method.score_reset": CategoricalDistribution(("inherit", "rewind", "reinit")),
    "method.lr_reset": CategoricalDistribution(("rewind", "hold")),
    "method.zero_init": CategoricalDistribution((False, True)),
    "optim.lr": FloatDistribution(0.02, 0.4, log=True),
}

IEP_METHODS_SPACE = SearchSpace(
    name="iep_methods",
    description="EP, hard iEP (FT/SRw/SRi/LR), soft iEP (LR, LR+zero init, SRw+zero init) and the dense "
                "LR-rewinding ticket at every cycle's remaining ratio (ResNet-18, CIFAR-10/100, p=0.2, 20 cycles)",
    paper="soft-iep.txt §5 Fig. 3b (accuracy) and Fig. 5a (dying ratio); appendix C.2.1 Fig. 10 "
          "(3 seeds in the paper: --num-samples 3)",
    base={**PAPER_IEP_SETUP, "data.dataset": "cifar10", "model.name": "resnet18"},
    grid={"data.dataset": ("cifar10", "cifar100")},
    variants={**IEP_METHODS, "dense_lrr": {"method.name": "dense_lrr"}},
    optuna=IEP_OPTUNA,
)

# Table 5: remaining .328 = 0.8^5 and .012 ~ 0.8^20, i.e. the soft iEP reference row is
# iep_methods' soft_lr at cycles 5 and 20.
TABLE5_PRUNE_RATES: tuple[float, ...] = (round(1 - 0.8**5, 6), round(1 - 0.8**20, 6))

EP_PROGRESSIVE = SearchSpace(
    name="ep_progressive",
    description="EP whose prune rate rises in 1/2/4/8/16 equal stages (linear or exponential) of one "
                "100-epoch run, to remaining 0.328 or 0.012 (ResNet-18, CIFAR-10)",
    paper="soft-iep-appendix.txt C.1 Table 5 (soft iEP row: iep_methods soft_lr, cycles 5 and 20)",
    base={**PAPER_EP_SETUP, "data.dataset": "cifar10", "model.name": "resnet18"},
    grid={"method.progressive_stages": (1, 2, 4, 8, 16), "method.progressive_schedule": ("lin", "exp"),
          "method.prune_rate": TABLE5_PRUNE_RATES},
    optuna={"method.progressive_stages": IntDistribution(1, 16),
            "method.progressive_schedule": CategoricalDistribution(("lin", "exp")),
            "method.prune_rate": FloatDistribution(0.5, 0.99)},
)

MULTICOAT = SearchSpace(
    name="multicoat",
    description="EP and soft iEP with a 3-coated supermask (linear spanning) against one coat, at every "
                "cycle's remaining ratio (ResNet-18, CIFAR-10/100)",
    paper="soft-iep.txt Fig. 4a; soft-iep-appendix.txt C.2.2 Fig. 11 (Okoshi et al. 2022, eq. 4)",
    base={**PAPER_IEP_SETUP, "data.dataset": "cifar10", "model.name": "resnet18"},
    grid={"data.dataset": ("cifar10", "cifar100")},
    variants={"ep": IEP_METHODS["ep"], "ep_3coats": {**IEP_METHODS["ep"], "method.coats": 3},
              "soft_lr": {}, "soft_lr_3coats": {"method.coats": 3}},
    optuna={"method.coats": IntDistribution(1, 7), "method.shrinkage": FloatDistribution(0.1, 0.5)},
)

# Fig. 4b / 12: ResNet-18, ResNet-18x2, ResNeXt (32x4d) and ConvMixer (256/8), EP and soft iEP.
ARCHITECTURES: dict[str, dict[str, object]] = {
    "resnet18": {"model.name": "resnet18"},
    "resnet18x2": {"model.name": "resnet18", "model.width": 2.0},
    "resnext29_32x4d": {"model.name": "resnext29_32x4d"},
    "convmixer_256_8": {"model.name": "convmixer_256_8"},
}

SLT_ARCHITECTURES = SearchSpace(
    name="slt_architectures",
    description="EP against soft iEP on ResNet-18, ResNet-18x2, ResNeXt-29 (32x4d) and ConvMixer-256/8 "
                "(CIFAR-10/100, p=0.2, 20 cycles)",
    paper="soft-iep.txt Fig. 4b; soft-iep-appendix.txt C.2.3 Fig. 12",
    base={**PAPER_IEP_SETUP, "data.dataset": "cifar10", "model.name": "resnet18"},
    grid={"data.dataset": ("cifar10", "cifar100")},
    variants={f"{arch}/{method}": {**model, **IEP_METHODS[method]}
              for arch, model in ARCHITECTURES.items() for method in ("ep", "soft_lr")},
    optuna={"model.name": CategoricalDistribution(("resnet18", "resnext29_32x4d", "convmixer_256_8")),
            "method.score_reset": CategoricalDistribution(("inherit", "rewind"))},
)

# Table 2 (rows read as (θ0, s_0); the text: default = signed Kaiming constant weights, Kaiming
# uniform scores, k = 0.7). C.2.4's pre-trained weights need a file: --set
# method.weight_init=pretrained --set method.pretrained_path=FILE.
TABLE2_VARIANTS: dict[str, dict[str, object]] = {
    "scaled_sc/uniform": {"method.weight_init": "scaled_signed_constant", "method.score_init": "kaiming_uniform"},
    "scaled_sc/normal": {"method.weight_init": "scaled_signed_constant", "method.score_init": "kaiming_normal"},
    "sc/uniform": {"method.weight_init": "signed_constant", "method.score_init": "kaiming_uniform"},
    "kaiming_normal/uniform": {"method.weight_init": "kaiming_normal", "method.score_init": "kaiming_uniform"},
}

SLT_INIT = SearchSpace(
    name="slt_init",
    description="edge-popup accuracy and dying ratio under weight x score initialisations (Conv8/ResNet18 x "
                "CIFAR-10/SVHN, k=0.7)",
    paper="soft-iep.txt §3 Table 2",
    base={**PAPER_EP_SETUP, "method.prune_rate": 0.7, "data.dataset": "cifar10", "model.name": "conv8"},
    grid={"model.name": ("conv8", "resnet18"), "data.dataset": ("cifar10", "svhn")},
    variants=TABLE2_VARIANTS,
    optuna={"method.weight_init": CategoricalDistribution(
                ("signed_constant", "scaled_signed_constant", "kaiming_normal")),
            "method.score_init": CategoricalDistribution(("kaiming_uniform", "kaiming_normal"))},
)

# A.3: same θ0 and s_0 (run.seed), another batch order (run.data_seed); k = 0.2, ResNet-18, CIFAR-10.
# The per-epoch masks (run.masks_every=1) feed trainables.metrics.shared_ratio_by_epoch.
EP_SHARED_MASKS = SearchSpace(
    name="ep_shared_masks",
    description="edge-popup from one init with two batch orders, masks kept every epoch: the shared-mask "
                "ratio over training against chance (ResNet-18, CIFAR-10, k=0.2)",
    paper="soft-iep-appendix.txt A.3 Fig. 8",
    base={**PAPER_EP_SETUP, "method.prune_rate": 0.2, "data.dataset": "cifar10", "model.name": "resnet18",
          "run.seed": 0, "run.masks_every": 1},
    grid={"run.data_seed": (1, 2)},
    optuna={"run.data_seed": IntDistribution(1, 1000)},
)

# ResNet-20 (BatchNorm after every conv, as the paper's ResNet-18) with the paper's signed-constant
# weights. Conv-4 has no BatchNorm: there the unscaled weights shrink the signal through its
# layers as the density falls, and EP collapses for that reason alone (k = 0.832, 10 epochs:
# 0.289 on Conv-4, 0.986 on ResNet-20), while iEP, inheriting trained scores, does not. Scaling
# the init does not repair it inside iEP: the scaled init is drawn once, at cycle 1's k (EP still
# fell to 0.28 at cycle 8). With normalisation the space compares exploration, not the init.
IEP_QUICK = SearchSpace(
    name="iep_quick",
    description="EP vs hard iEP (LR) vs soft iEP (LR) on bundled digits, ResNet-20 (BatchNorm), p=0.2, 8 cycles "
                "of 4 epochs (minutes on 2 idle cores)",
    paper="soft-iep.txt Fig. 3b / 5a, scaled down",
    base={**PAPER_IEP_SETUP, "data.dataset": "digits", "model.name": "resnet20", "data.batch_size": 64,
          "schedule.epochs": 4, "method.cycles": 8},
    variants={name: IEP_METHODS[name] for name in ("ep", "hard_lr", "soft_lr")},
    optuna=IEP_OPTUNA,
)

SPACES = (EP_QUICK, EP_PRUNE_RATES, EP_HPARAMS, IEP_QUICK, IEP_METHODS_SPACE, EP_PROGRESSIVE, MULTICOAT,
          SLT_ARCHITECTURES, SLT_INIT, EP_SHARED_MASKS)
