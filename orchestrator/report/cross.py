"""Across families (beyond the papers): accuracy and exploration against density for every
EP, iEP, DST, IMP and dense run of the experiment, on one chart."""

from __future__ import annotations

import matplotlib.ticker  # noqa: F401 - matplotlib.ticker below
import numpy as np
import pandas as pd

from orchestrator.report.collect import Runs, Trial, differing_keys, sweep_name
from orchestrator.report.figure import Figure, Missing, axes, parents_of
from trainables.config import label_of


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
        return t.slt_label.split(" (")[0]  # EP (run afresh per cycle), soft iEP, hard iEP
    if t.method == "dst":
        return f"DST {t.dst_label}" if t.dst_label in ("static", "dense") else "DST"
    return label_of(t.method)


def chart(runs: Runs) -> Figure | Missing:
    trials = [t for t in runs.trials if "test_acc" in t.metrics]
    families = {t.family for t in trials}
    if len(families) < 2:
        return Missing("cross_families", "ep_quick, dst_quick, imp_quick (one --experiment)",
                       f"needs runs of >= 2 families in the experiment, found {sorted(families) or 'none'}")
    df = pd.DataFrame([{"run_id": t.run_id, "family": t.family, "method": method_label(t), "cycle": np.nan,
                        "density": density(t), "test_acc": t.metrics["test_acc"],
                        "dying_ratio": t.metrics.get("dying_ratio", np.nan)} for t in trials])
    # iterative runs (iEP cycles, IMP rounds) also pass through every earlier density: their path
    cycled = [t for t in trials if t.method in ("iep", "imp", "dense_lrr") and "cycle_remaining_ratio" in t.metrics]
    path = runs.per_step(cycled, ["cycle_remaining_ratio", "cycle_test_acc", "cycle_dying_ratio"], [])
    if len(path):
        path = path.dropna(subset=["cycle_remaining_ratio", "cycle_test_acc"]).rename(columns={
            "step": "cycle", "cycle_remaining_ratio": "density", "cycle_test_acc": "test_acc",
            "cycle_dying_ratio": "dying_ratio"})
        labels = {t.run_id: (t.family, method_label(t)) for t in cycled}
        path["family"] = path["run_id"].map(lambda r: labels[r][0])
        path["method"] = path["run_id"].map(lambda r: labels[r][1])
        df = pd.concat([df, path.reindex(columns=df.columns)], ignore_index=True)
    fig, ax = axes(ncols=2)
    methods = sorted(df["method"].unique())
    markers = dict(zip(methods, "osD^v<>ph*X", strict=False))
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for (method, _run_id), g in df[df["cycle"].notna()].groupby(["method", "run_id"]):
        g = g.sort_values("cycle")
        ax[0, 0].plot(g["density"], g["test_acc"], "-", color=colors[method], alpha=0.5, lw=1)
        if g["dying_ratio"].notna().any():
            ax[0, 1].plot(g["density"], g["dying_ratio"], "-", color=colors[method], alpha=0.5, lw=1)
    final = df[df["cycle"].isna()]
    for method, g in final.groupby("method"):
        kw = {"marker": markers.get(method, "o"), "color": colors[method], "label": method, "s": 30}
        ax[0, 0].scatter(g["density"], g["test_acc"], **kw)
        if g["dying_ratio"].notna().any():
            ax[0, 1].scatter(g["density"], g["dying_ratio"], **kw)
    lo = max(1e-4, float(df["density"].min()) * 0.8)
    for a, ylabel in ((ax[0, 0], "test accuracy"), (ax[0, 1], "dying ratio (never-active weights)")):
        a.set_xscale("log")
        a.set_xlim(lo, 1.2)
        ticks = [v for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.33, 0.5, 1.0) if lo <= v <= 1.2]
        a.set_xticks(ticks, [f"{v:g}" for v in ticks])
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        a.set(xlabel="density (fraction of weights kept, log)", ylabel=ylabel)
        a.legend(fontsize=7)
    ax[0, 0].set_title("Accuracy against density")
    ax[0, 1].set_title("Exploration against density")
    return Figure("cross_families", "All families: accuracy and exploration against density",
                  "Final test accuracy (left) and dying ratio (right; for DST 1 − ITOP; IMP logs none) "
                  "against the final density, one marker per run, for every family in the experiment; lines: "
                  "the per-cycle (iEP) or per-round (IMP) path of iterative runs (rows with a cycle).",
                  "none (across the three papers)", df, fig, parents_of(trials))



def sweeps(runs: Runs) -> list[Figure | Missing]:
    """Per sweep: final test accuracy (and dying ratio) against what the sweep varied."""
    out: list[Figure | Missing] = []
    for parent_id, parent in runs.parents.items():
        trials = [t for t in runs.trials if t.parent_id == parent_id and "test_acc" in t.metrics]
        name = "sweep_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in sweep_name(parent))
        if not trials:
            out.append(Missing(name, parent.data.params.get("space", "?"), "the sweep has no finished trial"))
            continue
        differ = differing_keys(trials)
        numeric = next((k for k in differ if all(isinstance(t.p(k), int | float) and not isinstance(t.p(k), bool)
                                                 for t in trials)), None)
        df = pd.DataFrame([{"run_id": t.run_id, "seed": t.p("run.seed"),
                            "setting": " ".join(f"{k.rsplit('.', 1)[-1]}={t.params.get(k)}" for k in differ
                                                if k != numeric) or "-",
                            **({numeric: t.p(numeric)} if numeric else {}), "test_acc": t.metrics["test_acc"],
                            "dying_ratio": t.metrics.get("dying_ratio", np.nan)} for t in trials])
        fig, ax = axes(w=6.5, h=4)
        a = ax[0, 0]
        dying = df["dying_ratio"].notna().any()
        a2 = a.twinx() if dying else None
        if numeric:
            for setting, g in df.groupby("setting"):
                m = g.groupby(numeric)[["test_acc", "dying_ratio"]].mean().sort_index()
                line, = a.plot(m.index, m["test_acc"], "o-", label=setting[:60])
                if a2 is not None:
                    a2.plot(m.index, m["dying_ratio"], "s--", color=line.get_color())
            a.set_xlabel(numeric)
        else:
            m = df.groupby("setting")[["test_acc", "dying_ratio"]].mean()
            xs = range(len(m))
            a.plot(xs, m["test_acc"], "o-", label="test acc")
            if a2 is not None:
                a2.plot(xs, m["dying_ratio"], "s--", color="tab:red", label="dying ratio d_T")
            a.set_xticks(list(xs), [s[:40] for s in m.index], rotation=60, ha="right", fontsize=6)
        a.set_ylabel("final test accuracy")
        if a2 is not None:
            a2.set_ylabel("dying ratio d_T (dashed)")
        if df["setting"].nunique() <= 8:  # beyond that a legend hides the plot: the CSV names them
            a.legend(fontsize=6, loc="lower left")
        space = parent.data.params.get("space", "?")
        a.set_title(f"{parent.info.run_name} ({space})", fontsize=10)
        out.append(Figure(name, f"Sweep {parent.info.run_name}: results",
                          f"Final test accuracy (and dying ratio where logged) of every trial of sweep "
                          f"{parent.info.run_name} (space {space}) against what it varied (mean over seeds).",
                          "none (the sweep's overview)", df, fig, [parent_id]))
    return out


BUILDERS = [chart, sweeps]
