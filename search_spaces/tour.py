"""The default sweep: one run of each family on the bundled digits at a matched density, ending
with the report's cross-family chart (accuracy and exploration against density).

Density 0.8^5 = 0.328 everywhere: EP prunes k = 0.672; soft iEP shrinks by p = 0.2 over 5
cycles; DST keeps D = 0.328 (gradient growth, magnitude pruning: RigL-style); IMP prunes 20% per
round, 6 rounds. One MLP 64-256-256-10, SGD (Adam for IMP, its LeNet regime), so the families
differ only where their methods do. A minute or two on 2 cores.
"""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution

from search_spaces.base import SearchSpace
from search_spaces.dst import DST_DEFAULTS
from search_spaces.edge_popup import PAPER_EP_SETUP, PAPER_IEP_SETUP
from search_spaces.imp import IMP_DEFAULTS, TABLE1

DENSITY = 0.8 ** 5  # 0.328
COMMON = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": (256, 256), "data.batch_size": 64,
          "schedule.epochs": 10}

TOUR = SearchSpace(
    name="tour",
    description="the default sweep: dense, EP, soft iEP, DST (gradient growth + magnitude pruning) and IMP "
                "on bundled digits at density 0.328, ending with the cross-family chart (a few minutes on 2 cores)",
    paper="across soft-iep.txt, fantastic-weights-dst.txt and understanding-imp.txt, scaled down",
    base=COMMON,
    variants={
        "dense": {"method.name": "dense", "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9,
                  "schedule.name": "cosine"},
        "ep": {**PAPER_EP_SETUP, "method.prune_rate": round(1 - DENSITY, 4), "schedule.epochs": 10},
        "soft_iep": {**PAPER_IEP_SETUP, "method.cycles": 5, "schedule.epochs": 2},
        "dst_rigl": {**DST_DEFAULTS, "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9,
                     "schedule.name": "cosine", "method.density": round(DENSITY, 4), "method.growth": "gradient",
                     "method.criterion": "magnitude", "method.update_period": 50, "method.distribution": "er"},
        "imp": {**IMP_DEFAULTS, **{k: v for k, v in TABLE1["lenet_mnist"].items()
                                   if k.startswith(("optim.", "method.", "schedule.name"))},
                "method.rounds": 6, "schedule.epochs": 2},
    },
    # each family keeps its own optimizer and LR; what they share is the data order's batch size
    optuna={"data.batch_size": CategoricalDistribution((32, 64, 128))},
)

SPACES = (TOUR,)
