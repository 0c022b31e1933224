"""DST figures and tables (fantastic-weights-dst.txt) from the DST runs logged in MLflow: each
figure's CSV beside its PNG holds the table the paper prints (accuracy per criterion and density,
ranks, Jaccard matrices, ITOP and the loss gap)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from orchestrator.report.collect import Runs, Trial
from orchestrator.report.figure import Figure, Missing, axes, mean_se, parents_of


def _dst(runs: Runs) -> list[Trial]:
    """DST runs, and the dense runs of the same sweeps (the dense baseline)."""
    dst = [t for t in runs.of("dst") if "test_acc" in t.metrics]
    sweeps = {t.parent_id for t in dst}
    return dst + [t for t in runs.of("dense") if t.method == "dense" and t.parent_id in sweeps
                  and "test_acc" in t.metrics]


def _frame(trials: list[Trial], *metrics: str) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": t.run_id, "label": t.dst_label, "criterion": t.p("method.criterion"),
                          "growth": t.p("method.growth"), "density": t.p("method.density"),
                          "update_period": t.p("method.update_period"), "seed": t.p("run.seed"),
                          **{m: t.metrics.get(m, np.nan) for m in metrics}} for t in trials])


def fig1(runs: Runs) -> Figure | Missing:
    """Accuracy against density per criterion, one panel per growth; static and dense baselines."""
    trials = _dst(runs)
    df = _frame(trials, "test_acc")
    dyn = df[~df["label"].isin(["static", "dense"])] if len(df) else df
    if dyn.empty or dyn["density"].nunique() < 2:
        return Missing("dst_fig1", "dst_quick", "needs DST runs at >= 2 densities")
    growths = sorted(dyn["growth"].unique())
    fig, ax = axes(ncols=len(growths))
    static = mean_se(df[df["label"] == "static"], ["density"], "test_acc")
    dense = df[df["label"] == "dense"]["test_acc"]
    for i, growth in enumerate(growths):
        a = ax[0, i]
        for crit, g in dyn[dyn["growth"] == growth].groupby("criterion"):
            s = mean_se(g, ["density"], "test_acc")
            a.errorbar(s["density"], s["test_acc_mean"], yerr=s["test_acc_se"], marker="o", ms=3, capsize=2,
                       label=crit)
        if len(static):
            a.plot(static["density"], static["test_acc_mean"], color="lightblue", lw=2, ls="-", marker="s",
                   ms=3, label="static")
        if len(dense):
            a.axhline(dense.mean(), color="k", ls="--", lw=1, label="dense")
        a.set_xscale("log")
        ticks = sorted(df["density"].dropna().unique())
        a.set_xticks(ticks, [f"{d:g}" for d in ticks])
        a.minorticks_off()
        a.set(xlabel="density (log)", ylabel="test accuracy", title=f"{growth} growth")
        a.legend(fontsize=7)
    return Figure("dst_fig1", "Accuracy against density per criterion",
                  "Final test accuracy against density (log x) per pruning criterion, one panel per growth "
                  "criterion, with static sparse training and the dense model (dashed); mean ± s.e. over seeds.",
                  "fantastic-weights-dst.txt Fig. 1", df, fig, parents_of(trials))


def _by_period(runs: Runs, metric: str, name: str, ylabel: str, title: str, caption: str,
               paper: str) -> Figure | Missing:
    trials = [t for t in _dst(runs) if metric in t.metrics]
    df = _frame(trials, metric)
    dyn = df[~df["label"].isin(["static", "dense"])] if len(df) else df
    if dyn.empty or dyn["update_period"].nunique() < 2:
        return Missing(name, "dst_dt_quick", "needs DST runs at >= 2 update periods Δt (dst_update_period at paper scale)")
    panels = sorted({(g, d) for g, d in zip(dyn["growth"], dyn["density"], strict=True)})
    fig, ax = axes(ncols=len(panels))
    for i, (growth, density) in enumerate(panels):
        a = ax[0, i]
        for crit, g in dyn[(dyn["growth"] == growth) & (dyn["density"] == density)].groupby("criterion"):
            s = mean_se(g, ["update_period"], metric)
            a.errorbar(s["update_period"], s[f"{metric}_mean"], yerr=s[f"{metric}_se"], marker="o", ms=3,
                       capsize=2, label=crit)
        static = df[(df["label"] == "static") & (df["density"] == density)]
        if len(static) and metric == "test_acc":
            a.axhline(static[metric].mean(), color="c", ls="--", lw=1, label="static")
        a.set_xscale("log")
        a.set(xlabel="update period Δt (steps)", ylabel=ylabel, title=f"{growth} growth, D={density:g}")
        a.legend(fontsize=7)
    return Figure(name, title, caption, paper, df, fig, parents_of(trials))


def fig5(runs: Runs) -> Figure | Missing:
    return _by_period(runs, "test_acc", "dst_fig5", "test accuracy", "Accuracy against update period Δt",
                      "Final test accuracy against Δt (log x) per criterion, one panel per growth and density; "
                      "static sparse training dashed.", "fantastic-weights-dst.txt Fig. 5")


def fig11(runs: Runs) -> Figure | Missing:
    return _by_period(runs, "itop", "dst_fig11", "ITOP ratio", "ITOP against update period Δt",
                      "In-time over-parameterisation (fraction of weights ever active) at the end of training "
                      "against Δt per criterion.", "fantastic-weights-dst.txt Fig. 11")


def fig3(runs: Runs) -> list[Figure | Missing]:
    """Critical-difference diagrams: average ranks over (growth, density) blocks, Nemenyi CD."""
    trials = _dst(runs)
    df = _frame(trials, "test_acc").rename(columns={"test_acc": "test_acc"})
    df = df[~df["label"].isin(["static", "dense"])] if len(df) else df
    out: list[Figure | Missing] = []
    if df.empty:  # skipped before importing the metrics (torch, scikit-posthocs)
        return [Missing(f"dst_fig3_{suffix}", "dst_quick", f"{which}: no DST runs") for suffix, which in
                (("all", "all densities"), ("low", "D ≤ 0.2"), ("high", "D > 0.2"))]
    from trainables.metrics.ranking import rank_methods

    for suffix, pick, which in (("all", lambda d: d, "all densities"),
                                ("low", lambda d: d[d["density"] <= 0.2], "D ≤ 0.2"),
                                ("high", lambda d: d[d["density"] > 0.2], "D > 0.2")):
        name = f"dst_fig3_{suffix}"
        try:
            r = rank_methods(pick(df), blocks=["growth", "density"]) if len(df) else None
        except ValueError as e:
            r, why = None, str(e)
        else:
            why = "no DST runs"
        if r is None:
            out.append(Missing(name, "dst_quick", f"{which}: {why}"))
            continue
        data = pd.DataFrame({"criterion": r.average_ranks.index, "average_rank": r.average_ranks.values,
                             "n_blocks": r.n_blocks, "critical_difference": r.critical_difference,
                             "friedman_p": r.friedman_p})
        out.append(Figure(name, f"Critical-difference diagram ({which})",
                          f"Average rank of each pruning criterion over {r.n_blocks} (growth, density) blocks "
                          f"(1 = best; seeds averaged first); criteria joined by a bar are within the Nemenyi "
                          f"critical difference CD = {r.critical_difference:.2f} (p = 0.05); Friedman "
                          f"p = {r.friedman_p:.3g}.", "fantastic-weights-dst.txt Fig. 3", data,
                          cd_diagram(r.average_ranks, r.critical_difference, which), parents_of(trials)))
    return out


def cd_diagram(ranks: pd.Series, cd: float, title: str) -> object:
    """Demšar's diagram: a rank axis, each method's tick, bars joining non-different groups."""
    k = len(ranks)
    fig, ax = axes(w=6.5, h=0.9 + 0.28 * k)
    a = ax[0, 0]
    a.set_xlim(k + 0.2, 0.8)  # rank 1 (best) on the right, as Demšar draws it
    a.set_ylim(-(k + 1), 1.8)
    a.axhline(0, color="k", lw=1)
    for r in range(1, k + 1):
        a.plot([r, r], [0, 0.15], "k-", lw=1)
        a.text(r, 0.3, str(r), ha="center", fontsize=8)
    a.plot([1, 1 + cd], [1.2, 1.2], "k-", lw=2)
    a.text(1 + cd / 2, 1.4, f"CD = {cd:.2f}", ha="center", fontsize=8)
    items = list(ranks.items())
    for i, (name, r) in enumerate(items):
        y = -(i + 1) * 0.8
        best = i < (k + 1) // 2  # the better half is labelled on the right (rank 1's side)
        a.plot([r, r, 0.9 if best else k + 0.1], [0, y, y], "k-", lw=0.8)
        a.text(0.85 if best else k + 0.15, y, f"{name} ({r:.2f})", va="center", fontsize=8,
               ha="left" if best else "right")
    values = ranks.to_numpy()
    groups = []
    for i in range(k):  # maximal runs of consecutive methods within CD of each other
        j = max(j for j in range(i, k) if values[j] - values[i] < cd)
        if j > i and not any(g[0] <= i and j <= g[1] for g in groups):
            groups.append((i, j))
    for n, (i, j) in enumerate(groups):
        y = -0.25 - 0.15 * n
        a.plot([values[i] - 0.03, values[j] + 0.03], [y, y], "k-", lw=3)
    a.axis("off")
    a.set_title(f"Average ranks ({title})", fontsize=10)
    return fig


def fig6a(runs: Runs) -> Figure | Missing:
    """First-update Jaccard of the sets each criterion prunes from the same state."""
    rows = []
    trials = [t for t in _dst(runs) if t.dst_label not in ("static", "dense")]
    used: list[Trial] = []
    for t in trials:
        path = runs.artifact(t, "criteria_jaccard/cycle_01.parquet")
        if path is None:
            continue
        table = pq.read_table(path).to_pandas()
        rows.append(table[table["update"] == table["update"].min()].assign(seed=t.p("run.seed"),
                                                                               density=t.p("method.density")))
        used.append(t)
    if not rows:
        return Missing("dst_fig6a", "dst_quick", "needs DST runs with criteria_jaccard artifacts")
    from trainables.metrics.criteria_jaccard import jaccard_matrix  # torch: only once there is data

    allrows = pd.concat(rows)
    density = sorted(allrows["density"].unique())[len(allrows["density"].unique()) // 2]
    m = jaccard_matrix(allrows[allrows["density"] == density])
    return _heat(m, "dst_fig6a", f"First-update Jaccard of the prune sets (D={density:g})",
                 "Mean normalised Jaccard index (eq. 1) between the sets each criterion would remove at the "
                 "first topology update, from the same state; J_r rows: random subsets.",
                 "fantastic-weights-dst.txt Fig. 6a", used)


def fig6b(runs: Runs) -> Figure | Missing:
    """Final masks of runs from one init (same seed, density, growth), eq. 1, mean over seeds."""
    trials = [t for t in _dst(runs) if t.dst_label not in ("static", "dense")]
    if not trials:  # skipped before importing torch
        return Missing("dst_fig6b", "dst_quick", "needs DST runs with final masks of several criteria")
    from trainables.metrics.criteria_jaccard import mask_jaccard_matrix
    from trainables.sparse.mask_io import read_masks

    groups: dict[tuple, dict[str, Trial]] = {}  # (density, growth, Δt, seed) -> criterion -> run
    for t in trials:
        key = (t.p("method.density"), t.p("method.growth"), t.p("method.update_period"), t.p("run.seed"))
        groups.setdefault(key, {})[t.p("method.criterion")] = t
    mats_by: dict[tuple, list[pd.DataFrame]] = {}
    used_by: dict[tuple, list[Trial]] = {}
    for (d, g, period, _seed), by_crit in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if len(by_crit) < 2:
            continue
        masks = {}
        for crit, t in by_crit.items():
            path = runs.artifact(t, "masks/masks.parquet")
            if path is not None:
                masks[crit] = read_masks(path)
                used_by.setdefault((d, g, period), []).append(t)
        if len(masks) >= 2:
            mats_by.setdefault((d, g, period), []).append(mask_jaccard_matrix(masks))
    if not mats_by:
        return Missing("dst_fig6b", "dst_quick", "needs final masks of >= 2 criteria from one init")
    # the setting with the most criteria, then the lowest density (the paper's panels are D = 0.1 / 0.2)
    density, growth, period = min(mats_by, key=lambda k: (-mats_by[k][0].shape[0], k[0], str(k[1]), k[2]))
    mats, used = mats_by[(density, growth, period)], used_by[(density, growth, period)]
    mean = sum(mats[1:], mats[0]) / len(mats)
    j_init = [t.metrics["cycle/jaccard_init_random"] for t in used if "cycle/jaccard_init_random" in t.metrics]
    if j_init:
        mean.loc["J_init (random masks)"] = float(np.mean(j_init))
    return _heat(mean, "dst_fig6b", f"Final-mask Jaccard ({growth} growth, D={density:g}, Δt={period})",
                 "Mean normalised Jaccard index between the final masks of runs with different criteria from "
                 "the same initialisation (mean over seeds); J_init: random masks of that density.",
                 "fantastic-weights-dst.txt Fig. 6b", used)


def _heat(m: pd.DataFrame, name: str, title: str, caption: str, paper: str, used: list[Trial]) -> Figure:
    fig, ax = axes(w=1.2 + 0.75 * m.shape[1], h=0.8 + 0.5 * m.shape[0])
    a = ax[0, 0]
    im = a.imshow(m.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
    a.set_xticks(range(m.shape[1]), m.columns, rotation=45, ha="right", fontsize=8)
    a.set_yticks(range(m.shape[0]), m.index, fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m.iat[i, j]
            if np.isfinite(v):
                a.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=a, label="Jaccard index")
    a.set_title(title, fontsize=10)
    data = m.reset_index().rename(columns={"index": "row"})
    return Figure(name, title, caption, paper, data, fig, parents_of(used))


def fig4(runs: Runs) -> Figure | Missing:
    """Loss gap (validation − training loss) over epochs per criterion, and each run's final ITOP."""
    trials = _dst(runs)
    if not trials:
        return Missing("dst_fig4", "dst_quick", "needs DST runs with >= 2 epochs of train and test loss")
    from trainables.metrics.loss_gap import loss_gap  # torch: only once there is data

    rows = []
    for t in trials:
        test = dict(runs.history(t, "test_loss"))
        train = runs.history(t, "train_loss")
        if not train:
            continue
        gaps = loss_gap([test.get(step) for step, _ in train], [v for _, v in train])
        rows += [{"run_id": t.run_id, "label": t.dst_label, "density": t.p("method.density"),
                  "seed": t.p("run.seed"), "epoch": step, "loss_gap": gap,
                  "itop": t.metrics.get("itop", np.nan)} for (step, _), gap in zip(train, gaps, strict=True)]
    df = pd.DataFrame(rows)
    if df.empty or df["epoch"].nunique() < 2:
        return Missing("dst_fig4", "dst_quick", "needs DST runs with >= 2 epochs of train and test loss")
    densities = sorted(d for d in df["density"].dropna().unique() if d < 1) or [1.0]
    fig, ax = axes(ncols=len(densities))
    for i, density in enumerate(densities):
        a = ax[0, i]
        pick = df[(df["density"] == density) | (df["label"] == "dense")]
        for label, g in pick.groupby("label"):
            s = mean_se(g, ["epoch"], "loss_gap")
            a.plot(s["epoch"], s["loss_gap_mean"], marker="o", ms=2, lw=1,
                   ls="--" if label == "dense" else "-", label=label)
        a.axhline(0, color="grey", lw=0.5)
        a.set(xlabel="epoch", ylabel="loss gap (val − train)", title=f"D={density:g}")
        a.legend(fontsize=7)
    return Figure("dst_fig4", "Loss gap over training per criterion",
                  "Validation − training loss per epoch (mean over seeds) for each criterion+growth, "
                  "static and dense; the CSV also holds each run's final ITOP ratio (appendix E).",
                  "fantastic-weights-dst.txt Fig. 4", df, fig, parents_of(trials))


BUILDERS = [fig1, fig4, fig5, fig11, fig3, fig6a, fig6b]
