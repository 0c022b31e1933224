"""Dense-training references: the same architectures with every weight trained.

The strong-lottery paper compares its subnetworks with dense networks of similar size
(soft-iep.txt §5, Figure 3's black line); these spaces produce that reference.
"""

from __future__ import annotations

from optuna.distributions import FloatDistribution

from search_spaces.base import SearchSpace

DENSE_QUICK = SearchSpace(
    name="dense_quick",
    description="dense training on bundled digits, Conv-4, three learning rates (the reference for ep_quick)",
    paper="soft-iep.txt §5 dense reference, scaled down",
    base={"method.name": "dense", "data.dataset": "digits", "model.name": "conv4", "schedule.epochs": 15,
          "data.batch_size": 64, "optim.name": "sgd", "optim.momentum": 0.9, "optim.weight_decay": 1e-4,
          "schedule.name": "cosine"},
    # Conv-4 has no BatchNorm: SGD with momentum 0.9 diverges at lr 0.05-0.1 here (measured).
    grid={"optim.lr": (0.003, 0.01, 0.03)},
    optuna={"optim.lr": FloatDistribution(0.001, 0.05, log=True),
            "optim.weight_decay": FloatDistribution(1e-6, 1e-3, log=True)},
    metric="test_acc",
)

SPACES = (DENSE_QUICK,)
