"""Across families (beyond the papers): accuracy and exploration against density for every
EP, iEP, DST, IMP and dense run of the experiment, on one chart."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.report.collect import Runs, Trial
from orchestrator.report.figure import Figure, Missing, axes, parents_of

LABELS = {"edge_popup": "EP", "iep": "iEP", "dst": "DST", "imp": "IMP", "dense": "dense", "dense_lrr": "dense LRR"}


def density(t: Trial) -> float:
    """The final fraction of weights kept, from what the run logged (its config when it logs none)."""
    if "cycle_remaining_ratio" in t.metrics:
        return t.metrics["cycle_remaining_ratio"]
    if "density" in t.metrics:
        return t.metrics["density"]
    if t.method == "dst":
        return float(t.p("method.density"))
    return 1.0


def method_label(t: Trial) -> str:
    if t.method == "iep":
        return f"{t.p('method.pruning', 'soft')} iEP"
    if t.method == "dst":
        return f"DST {t.dst_label}" if t.dst_label in ("static", "dense") else "DST"
    return LABELS.get(t.method, t.method)


def chart(runs: Runs) -> Figure | Missing:
    trials = [t for t in runs.trials if "test_acc" in t.metrics]
    families = {t.family for t in trials}
    if len(families) < 2:
        return Missing("cross_families", "ep_quick, dst_quick, imp_quick (one --experiment)",
                       f"needs runs of >= 2 families in the experiment, found {sorted(families) or 'none'}")
    df = pd.DataFrame([{"run_id": t.run_id, "family": t.family, "method": method_label(t),
                        "density": density(t), "test_acc": t.metrics["test_acc"],
                        "dying_ratio": t.metrics.get("dying_ratio", np.nan)} for t in trials])
    fig, ax = axes(ncols=2)
    markers = dict(zip(sorted(df["method"].unique()), "osD^v<>ph*X", strict=False))
    for method, g in df.groupby("method"):
        ax[0, 0].scatter(g["density"], g["test_acc"], marker=markers.get(method, "o"), label=method, s=24)
        if g["dying_ratio"].notna().any():
            ax[0, 1].scatter(g["density"], g["dying_ratio"], marker=markers.get(method, "o"), label=method, s=24)
    for a, ylabel in ((ax[0, 0], "test accuracy"), (ax[0, 1], "dying ratio (never-active weights)")):
        a.set_xscale("log")
        a.set(xlabel="density (fraction of weights kept, log)", ylabel=ylabel)
        a.legend(fontsize=7)
    ax[0, 0].set_title("Accuracy against density")
    ax[0, 1].set_title("Exploration against density")
    return Figure("cross_families", "All families: accuracy and exploration against density",
                  "Final test accuracy (left) and dying ratio (right; for DST 1 − ITOP; IMP logs none) "
                  "against the final density, one point per run, for every family in the experiment.",
                  "none (across the three papers)", df, fig, parents_of(trials))


BUILDERS = [chart]
