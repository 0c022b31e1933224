"""Unstructured against N:M (2:4) at the same density 0.5, for each family: accuracy and the
measured inference speed-up side by side (infer_speedup, trainables.export).

Every variant is one family with one pattern; the families share the training setup within a
space, and each pair (unstructured, 2:4) differs only in `sparsity.pattern`. IMP reaches 0.5
at its last round: unstructured by p with (1 - p)^(R-1) = 0.5, 2:4 by the per-group schedule
of `trainables.sparse.nm_pattern.imp_round_keep` (exactly 2 of 4 at round R).
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution

from search_spaces.base import SearchSpace
from search_spaces.dst import PANELS as DST_PANELS
from search_spaces.dst import TRAINING as DST_TRAINING
from search_spaces.edge_popup import PAPER_EP_SETUP
from search_spaces.imp import TABLE1 as IMP_TABLE1

PATTERNS: dict[str, str] = {"unstructured": "unstructured", "2of4": "2:4"}


def _imp_fraction(rounds: int, density: float = 0.5) -> float:
    """p with (1 - p)^(rounds - 1) = density (rounded to 6 decimals, as a user would type it)."""
    return round(1 - density ** (1 / (rounds - 1)), 6)


def _pairs(families: dict[str, dict[str, Any]], patterns: dict[str, str] = PATTERNS) -> dict[str, dict[str, Any]]:
    """family x pattern; the dataset stays in the space's base (one dataset per space)."""
    return {f"{family}_{label}": {**{k: v for k, v in keys.items() if k != "data.dataset"},
                                  "sparsity.pattern": pattern}
            for family, keys in families.items() for label, pattern in patterns.items()}


QUICK_FAMILIES: dict[str, dict[str, Any]] = {
    "ep": {"method.name": "edge_popup", "method.prune_rate": 0.5, "optim.lr": 0.1},
    "dst": {"method.name": "dst", "method.density": 0.5, "method.distribution": "uniform",
            "method.update_period": 50, "method.prune_fraction": 0.5},
    "imp": {"method.name": "imp", "method.rounds": 3, "method.prune_fraction": _imp_fraction(3),
            "method.reinit_baseline": False, "method.scope": "layerwise"},
}

# An MLP 64-256-256-10 on the bundled digits (every input dimension a multiple of 4), as dst_quick;
# with --set model.name=conv4 the 1-channel stem (9 inputs) stays unstructured.
NM_QUICK = SearchSpace(
    name="nm_quick",
    description="unstructured vs 2:4 at density 0.5 for edge-popup, DST and IMP on bundled digits (MLP): "
                "accuracy and measured CPU inference speed-up",
    paper="NVIDIA 2:4 (Mishra et al. 2021) applied to soft-iep.txt, fantastic-weights-dst.txt, understanding-imp.txt",
    base={"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": (256, 256), "data.batch_size": 64,
          "schedule.epochs": 12, "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9,
          "optim.weight_decay": 1e-4, "schedule.name": "cosine", "run.checkpoint_every": 12,
          "run.infer_seconds": 5.0, "sparsity.misfit": "unstructured"},
    variants=_pairs(QUICK_FAMILIES),
    # Optuna (no variants): edge-popup's learning rate and pattern at density 0.5
    optuna={"optim.lr": FloatDistribution(0.01, 0.3, log=True),
            "sparsity.pattern": CategoricalDistribution(("unstructured", "2:4"))},
)

# The same at density 0.125 (1:8), where CPU CSR layers can win (DESIGN.md: ~2x at 0.1).
NM_QUICK_SPARSE = SearchSpace(
    name="nm_quick_sparse",
    description="unstructured vs 1:8 at density 0.125 for edge-popup, DST and IMP on bundled digits (MLP): "
                "accuracy and measured CPU inference speed-up",
    paper=NM_QUICK.paper,
    base=NM_QUICK.base,
    variants=_pairs({
        "ep": {**QUICK_FAMILIES["ep"], "method.prune_rate": 0.875},
        "dst": {**QUICK_FAMILIES["dst"], "method.density": 0.125},
        "imp": {**QUICK_FAMILIES["imp"], "method.rounds": 4, "method.prune_fraction": _imp_fraction(4, 0.125)},
    }, {"unstructured": "unstructured", "1of8": "1:8"}),
    optuna=NM_QUICK.optuna,
)

_EP_CIFAR = {**PAPER_EP_SETUP, "model.name": "resnet18", "method.prune_rate": 0.5}
_DST_CIFAR = {**DST_TRAINING, **DST_PANELS["resnet56_cifar10"], "method.name": "dst", "method.density": 0.5,
              "method.distribution": "uniform", "method.update_period": 800, "method.prune_fraction": 0.5}
_IMP_CIFAR = {**IMP_TABLE1["resnet20_cifar10"], "method.name": "imp", "method.rounds": 4,
              "method.prune_fraction": _imp_fraction(4), "method.scope": "layerwise"}

# The papers' CIFAR-10 setups; the 3-channel stem (27 inputs) is not a multiple of 4 and
# stays unstructured at density 0.5 (sparsity.misfit=unstructured), as NVIDIA's ASP skips it.
NM_CIFAR = SearchSpace(
    name="nm_cifar",
    description="unstructured vs 2:4 at density 0.5 at the papers' scale on CIFAR-10: edge-popup ResNet-18, "
                "DST ResNet-56, IMP ResNet-20 (stems unstructured)",
    paper="soft-iep.txt §3, fantastic-weights-dst.txt Table 2, understanding-imp.txt Table 1",
    base={"data.dataset": "cifar10", "sparsity.misfit": "unstructured"},
    variants=_pairs({"ep": _EP_CIFAR, "dst": _DST_CIFAR, "imp": _IMP_CIFAR}),
    optuna=NM_QUICK.optuna,
)

SPACES = (NM_QUICK, NM_QUICK_SPARSE, NM_CIFAR)
