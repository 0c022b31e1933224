"""Strong-lottery figures (soft-iep.txt and its appendix) from EP / iEP runs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.report.collect import Runs, Trial, differing_keys
from orchestrator.report.figure import (
    Figure,
    Missing,
    axes,
    mean_se,
    parents_of,
    path_arrow,
    ratio_axis,
)
from trainables.keys import CYCLE_DENSITY, CYCLE_DYING_RATIO, CYCLE_TEST_ACC

# visited 0 times = never in the mask: the dying ratio (logged once, as that)
VISITS = [CYCLE_DYING_RATIO, "cycle/visits_1", "cycle/visits_2", "cycle/visits_3", "cycle/visits_4",
          "cycle/visits_5", "cycle/visits_gt5"]
NEURONS = ["cycle/dying_neurons_no_input", "cycle/dying_neurons_no_output", "cycle/dying_neurons_both",
           "cycle/dying_neurons_overlap"]


def _ep(runs: Runs) -> list[Trial]:
    return [t for t in runs.trials if t.method == "edge_popup" and "dying_ratio" in t.metrics]


def _cycled(runs: Runs) -> list[Trial]:
    """Runs with several cycles (iEP, and EP/dense LRR evaluated at every cycle's ratio)."""
    return [t for t in runs.trials if (t.family == "strong_lottery" or t.method == "dense_lrr") and (t.p("method.cycles", 1) or 1) > 1
            and CYCLE_TEST_ACC in t.metrics]


def table1(runs: Runs) -> Figure | Missing:
    """d_T and k − d_T against the prune rate k (last epoch of each EP run)."""
    ep = _ep(runs)
    df = pd.DataFrame([{"run_id": t.run_id, "k": t.p("method.prune_rate"), "seed": t.p("run.seed"),
                        "d_T": t.metrics["dying_ratio"], "k_minus_d_T": t.metrics["k_minus_dying"]} for t in ep])
    if df.empty or df["k"].nunique() < 2:
        return Missing("slt_table1", "ep_prune_rates", "needs EP runs at >= 2 prune rates k")
    fig, ax = axes()
    for col, label in (("d_T", "d_T (dying ratio)"), ("k_minus_d_T", "k − d_T")):
        s = mean_se(df, ["k"], col)
        ax[0, 0].errorbar(s["k"], s[f"{col}_mean"], yerr=s[f"{col}_se"], marker="o", capsize=3, label=label)
    ax[0, 0].plot(sorted(df["k"]), sorted(df["k"]), "k:", lw=1, label="k")
    ax[0, 0].set(xlabel="prune rate k", ylabel="ratio of all edges", title="Dying ratio against k")
    ax[0, 0].legend()
    return Figure("slt_table1", "d_T and k − d_T against k",
                  "Dying ratio d_T at the end of EP training, and the edges k − d_T that were pruned after "
                  "having been selected at least once, per prune rate k (mean ± s.e. over seeds).",
                  "soft-iep.txt Table 1", df, fig, parents_of(ep))


def fig6(runs: Runs) -> Figure | Missing:
    """d_t over training, one line per k."""
    ep = _ep(runs)
    if not ep:
        return Missing("slt_fig6", "ep_prune_rates", "needs EP runs")
    df = runs.per_step(ep, ["dying_ratio"], ["method.prune_rate", "run.seed"]).rename(
        columns={"step": "epoch", "method.prune_rate": "k"})
    s = mean_se(df, ["k", "epoch"], "dying_ratio")
    fig, ax = axes()
    for k, g in s.groupby("k"):
        ax[0, 0].plot(g["epoch"], g["dying_ratio_mean"], marker=".", label=f"k={k:g}")
        ax[0, 0].fill_between(g["epoch"], g["dying_ratio_mean"] - g["dying_ratio_se"],
                              g["dying_ratio_mean"] + g["dying_ratio_se"], alpha=0.2)
    ax[0, 0].set(xlabel="epoch", ylabel="dying ratio d_t", title="Dying ratio over training")
    ax[0, 0].legend(fontsize=8)
    return Figure("slt_fig6", "d_t over training per k",
                  "Dying ratio d_t (edges never selected so far) after each epoch, per prune rate k.",
                  "soft-iep-appendix.txt Fig. 6", df, fig, parents_of(ep))


def fig7(runs: Runs) -> Figure | Missing:
    """Test accuracy against dying ratio, one point per EP run."""
    ep = [t for t in _ep(runs) if "test_acc" in t.metrics]
    if len(ep) < 2:
        return Missing("slt_fig7", "ep_hparams", "needs >= 2 EP runs")
    df = pd.DataFrame([{"run_id": t.run_id, "model": t.p("model.name"), "dataset": t.p("data.dataset"),
                        "k": t.p("method.prune_rate"), "dying_ratio": t.metrics["dying_ratio"],
                        "test_acc": t.metrics["test_acc"]} for t in ep])
    fig, ax = axes()
    for (model, data), g in df.groupby(["model", "dataset"]):
        ax[0, 0].scatter(g["dying_ratio"], g["test_acc"], label=f"{model} / {data}", s=18)
    ax[0, 0].set(xlabel="dying ratio d_T", ylabel="test accuracy", title="Accuracy against dying ratio (EP)")
    ax[0, 0].legend(fontsize=8)
    return Figure("slt_fig7", "Accuracy against dying ratio",
                  "Final test accuracy against final dying ratio, one point per EP run.",
                  "soft-iep-appendix.txt Fig. 7", df, fig, parents_of(ep))


def _cycle_frame(runs: Runs, trials: list[Trial], keys: list[str]) -> pd.DataFrame:
    df = runs.per_step(trials, [CYCLE_DENSITY, *keys], ["run.seed"]).rename(columns={"step": "cycle"})
    labels = {t.run_id: t.slt_label for t in trials}
    df.insert(1, "method", df["run_id"].map(labels))
    return df


def _bands(runs: Runs, key: str, name: str, ylabel: str, title: str, caption: str, paper: str,
           logx: bool = True) -> Figure | Missing:
    trials = [t for t in _cycled(runs) if key in t.metrics]
    if not trials:
        return Missing(name, "iep_quick", f"needs cycled SLT runs with {key}")
    df = _cycle_frame(runs, trials, [key])
    s = mean_se(df, ["method", "cycle"], key)
    rr = df.groupby(["method", "cycle"])[CYCLE_DENSITY].mean().rename("remaining_ratio")
    s = s.merge(rr.reset_index(), on=["method", "cycle"])
    fig, ax = axes()
    for method, g in s.groupby("method"):
        g = g.sort_values("cycle")
        line, = ax[0, 0].plot(g["remaining_ratio"], g[f"{key}_mean"], marker="o", ms=3, label=method)
        ax[0, 0].fill_between(g["remaining_ratio"], g[f"{key}_mean"] - g[f"{key}_se"],
                              g[f"{key}_mean"] + g[f"{key}_se"], alpha=0.2)
        path_arrow(ax[0, 0], g["remaining_ratio"], g[f"{key}_mean"], line.get_color())
    if logx:
        ratio_axis(ax[0, 0], s["remaining_ratio"])  # pruning proceeds to the right
    else:
        ax[0, 0].invert_xaxis()
    ax[0, 0].set(ylabel=ylabel, title=title)
    ax[0, 0].legend(fontsize=8)
    return Figure(name, title, caption, paper, df, fig, parents_of(trials))


def fig3b(runs: Runs) -> Figure | Missing:
    return _bands(runs, CYCLE_TEST_ACC, "slt_fig3b", "test accuracy", "Accuracy against remaining ratio",
                  "Test accuracy at the end of each cycle against its remaining ratio, per method; bands are "
                  "± one standard error over seeds.", "soft-iep.txt Fig. 3b")


def fig5a(runs: Runs) -> Figure | Missing:
    return _bands(runs, CYCLE_DYING_RATIO, "slt_fig5a", "dying ratio", "Dying ratio against remaining ratio",
                  "Per-cycle dying ratio (for hard pruning its worst case) against the cycle's remaining ratio, "
                  "per method (± s.e. over seeds).", "soft-iep.txt Fig. 5a")


def fig17(runs: Runs) -> Figure | Missing:
    """Visit-count ratios EP / soft iEP per remaining ratio (log2 axis, line y = 1)."""
    trials = [t for t in _cycled(runs) if "cycle/visits_1" in t.metrics]
    ep = [t for t in trials if t.slt_label == "EP"]
    soft = [t for t in trials if t.slt_label == "soft iEP (LR)"]
    if not ep or not soft:
        return Missing("slt_fig17", "iep_quick", "needs cycled EP and soft iEP runs with visit counts")
    df = _cycle_frame(runs, ep + soft, VISITS)
    df["method"] = np.where(df["run_id"].isin({t.run_id for t in ep}), "EP", "soft iEP")
    mean = df.groupby(["method", "cycle"])[[CYCLE_DENSITY, *VISITS]].mean()
    ratio = (mean.loc["EP", VISITS] / mean.loc["soft iEP", VISITS]).dropna(how="all")
    ratio.insert(0, "remaining_ratio", mean.loc["soft iEP", CYCLE_DENSITY])
    data = ratio.reset_index()
    fig, ax = axes()
    for col, lab in zip(VISITS, ["0 (dying)", "1", "2", "3", "4", "5", "> 5"], strict=True):
        ax[0, 0].plot(data["remaining_ratio"], data[col], marker=".", label=f"visited {lab}")
    ax[0, 0].axhline(1.0, color="k", ls="--", lw=1)
    ax[0, 0].set_yscale("log", base=2)
    ratio_axis(ax[0, 0], data["remaining_ratio"])
    ax[0, 0].set(ylabel="EP / soft iEP (fraction of edges)", title="Visit-count ratios")
    ax[0, 0].legend(fontsize=7, ncol=2)
    return Figure("slt_fig17", "Visit-count ratios EP / soft iEP",
                  "Fraction of edges selected 0, 1, …, 5, > 5 steps in a cycle, EP over soft iEP (means over "
                  "seeds), per cycle's remaining ratio; y = 1 dashed.",
                  "soft-iep-appendix.txt Fig. 17", data, fig, parents_of(ep + soft))


def fig15(runs: Runs) -> Figure | Missing:
    """Jaccard distance of soft iEP to hard iEP and to EP at every cycle (same seed), with chance."""
    trials = _cycled(runs)
    if not {t.slt_label for t in trials} >= {"soft iEP (LR)"}:  # skipped before importing torch
        return Missing("slt_fig15", "iep_quick", "needs soft iEP (LR) with hard iEP (LR) or EP runs of one seed "
                       "with masks/cycle_XX artifacts")
    from trainables.metrics.compare import jaccard_by_cycle

    by: dict[tuple[str, object], Trial] = {(t.slt_label, t.p("run.seed")): t for t in trials}
    rows, used = [], []
    for (label, seed), soft in by.items():
        if label != "soft iEP (LR)":
            continue
        for other in ("hard iEP (LR)", "EP"):
            t = by.get((other, seed))
            a, b = (runs.artifact_dir(x, "masks") for x in (soft, t)) if t else (None, None)
            if a is None or b is None:
                continue
            rows += [{"pair": f"soft iEP vs {other}", "seed": seed, **r} for r in jaccard_by_cycle(a, b)]
            used += [soft, t]
    if not rows:
        return Missing("slt_fig15", "iep_quick", "needs soft iEP (LR) with hard iEP (LR) or EP runs of one seed "
                       "with masks/cycle_XX artifacts")
    df = pd.DataFrame(rows)
    s = mean_se(df, ["pair", "cycle"], "jaccard_distance").merge(
        df.groupby(["pair", "cycle"])[["remaining_ratio", "chance"]].mean().reset_index(), on=["pair", "cycle"])
    fig, ax = axes()
    a = ax[0, 0]
    for pair, g in s.groupby("pair"):
        a.errorbar(g["remaining_ratio"], g["jaccard_distance_mean"], yerr=g["jaccard_distance_se"], marker="o",
                   ms=3, capsize=2, label=pair)
    chance = df.groupby("cycle")[["remaining_ratio", "chance"]].mean()
    a.plot(chance["remaining_ratio"], chance["chance"], "k--", lw=1, label="chance")
    ratio_axis(a, s["remaining_ratio"])
    a.set(ylabel="Jaccard distance", title="Mask distance between methods")
    a.legend(fontsize=8)
    return Figure("slt_fig15", "Jaccard distance between methods",
                  "Jaccard distance between the masks of soft iEP and hard iEP / EP at the end of every cycle, "
                  "runs of the same seed (mean ± s.e. over seeds); dashed: the chance level.",
                  "soft-iep-appendix.txt Fig. 15", df, fig, parents_of(used))


def fig5b(runs: Runs) -> Figure | Missing:
    """Score-rank trajectories of the sampled edges of one soft iEP run over its cycles."""
    import pyarrow.parquet as pq

    trials = sorted(_cycled(runs), key=lambda t: (t.slt_label != "soft iEP (LR)", t.p("run.seed") or 0))
    t = next((t for t in trials if t.method == "iep" and runs.artifacts(t, "ranks")), None)
    if t is None:
        return Missing("slt_fig5b", "iep_quick", "needs a cycled iEP run with ranks/cycle_XX artifacts")
    paths = runs.artifacts(t, "ranks")
    df = pd.concat([pq.read_table(runs.artifact(t, p)).to_pandas() for p in paths], ignore_index=True)
    df.insert(0, "run_id", t.run_id)
    last = df["cycle"].max()
    chosen = set(df[(df["cycle"] == last) & df["selected"]]["edge"])
    fig, ax = axes(w=6)
    a = ax[0, 0]
    for edge, g in df.groupby("edge"):
        a.plot(g["cycle"], g["rank"], color="tab:red" if edge in chosen else "tab:blue", lw=0.6, alpha=0.5)
    thr = df.groupby("cycle")["threshold"].mean()
    a.plot(thr.index, thr.values, "k-", lw=2, label="threshold (kept fraction)")
    a.set(xlabel="cycle", ylabel="score rank (fraction of the layer above)",
          title=f"Score ranks, {t.slt_label} (red: selected at cycle {last})")
    a.invert_yaxis()  # rank 0 = highest score, on top
    a.xaxis.get_major_locator().set_params(integer=True)
    a.legend(fontsize=8)
    return Figure("slt_fig5b", "Score-rank trajectories",
                  f"Rank of each of {df['edge'].nunique()} sampled edges' score at the end of every cycle of one "
                  f"{t.slt_label} run; red: selected at the last cycle, blue: not; black: the cycle's threshold.",
                  "soft-iep.txt Fig. 5b", df, fig, [t.parent_id])


def table6(runs: Runs) -> Figure | Missing:
    """Dying neurons of the second-last layer at the last cycle, per method."""
    trials = [t for t in runs.of("strong_lottery") if "cycle/dying_neurons_no_input" in t.metrics]
    if not trials:
        return Missing("slt_table6", "iep_quick", "needs SLT runs with dying-neuron counts")
    df = pd.DataFrame([{"run_id": t.run_id, "method": t.slt_label, "seed": t.p("run.seed"),
                        **{k: t.metrics[k] for k in NEURONS if k in t.metrics}} for t in trials])
    mean = df.groupby("method")[[k for k in NEURONS if k in df]].mean()
    fig, ax = axes(w=6)
    mean.rename(columns=lambda c: c.removeprefix("cycle/dying_neurons_")).plot.bar(ax=ax[0, 0], rot=0)
    ax[0, 0].set(xlabel="", ylabel="neurons (second-last layer)", title="Dying neurons at the last cycle")
    ax[0, 0].legend(fontsize=8)
    return Figure("slt_table6", "Dying neurons", "Neurons of the second-last layer with no input connection, no "
                  "output connection, both, and the overlap, at the end of the last cycle (mean over seeds).",
                  "soft-iep-appendix.txt Table 6", df, fig, parents_of(trials))


def table4(runs: Runs) -> Figure | Missing:
    """Test accuracy and dying ratio per row: each distinct config, what differs from the others."""
    trials = [t for t in _ep(runs) if "test_acc" in t.metrics]
    if len(trials) < 2:
        return Missing("slt_table4", "ep_hparams", "needs >= 2 EP runs")
    differ = differing_keys(trials)
    df = pd.DataFrame([{"run_id": t.run_id, "row": " ".join(f"{k}={t.params.get(k)}" for k in differ) or "all",
                        "seed": t.p("run.seed"), "test_acc": t.metrics["test_acc"],
                        "dying_ratio": t.metrics["dying_ratio"]} for t in trials])
    s = mean_se(df, ["row"], "test_acc").merge(mean_se(df, ["row"], "dying_ratio").drop(columns="n"), on="row")
    fig, ax = axes(w=8, h=0.4 + 0.3 * len(s))
    ax[0, 0].axis("off")
    cells = [[r.row, f"{r.test_acc_mean:.4f} ± {r.test_acc_se:.4f}", f"{r.dying_ratio_mean:.4f}", int(r.n)]
             for r in s.itertuples()]
    table = ax[0, 0].table(cellText=cells, colLabels=["row", "Test Acc", "DR", "seeds"], loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width([0, 1, 2, 3])
    return Figure("slt_table4", "Accuracy and dying ratio per row",
                  "Final test accuracy (mean ± s.e. over seeds) and dying ratio DR for each distinct "
                  "configuration; a row names the params that differ between the runs.",
                  "soft-iep-appendix.txt Table 4", df, fig, parents_of(trials))


BUILDERS = [table1, fig6, fig7, fig3b, fig5a, fig5b, fig15, fig17, table6, table4]
