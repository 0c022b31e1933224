"""IMP figures (understanding-imp.txt) from IMP runs. The paper's error bars are the minimum
and maximum over seeds, so these are too."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from orchestrator.report.collect import Runs, Trial
from orchestrator.report.figure import Figure, Missing, axes, parents_of

ROUND_KEYS = ["cycle_round", "cycle_remaining_ratio", "cycle_test_acc", "cycle_reinit_test_acc",
              "cycle_instability", "cycle_successive_instability", "cycle_threshold", "cycle_reinit_threshold"]


def _imp(runs: Runs) -> list[Trial]:
    return [t for t in runs.of("imp") if t.method == "imp" and "cycle_test_acc" in t.metrics]  # not dense_lrr


def rounds(runs: Runs, trials: list[Trial]) -> pd.DataFrame:
    """One row per (run, IMP round): the metrics logged at the round's IMP cycle (step = cycle)."""
    df = runs.per_step(trials, ROUND_KEYS, ["data.batch_size", "schedule.warmup_epochs", "run.seed"])
    if df.empty:
        return df
    df = df[df["cycle_test_acc"].notna() & df["cycle_remaining_ratio"].notna()].rename(columns={"step": "cycle"})
    labels = {t.run_id: t.imp_label for t in trials}
    df.insert(1, "variant", df["run_id"].map(labels))
    df["sparsity"] = 1 - df["cycle_remaining_ratio"]
    return df.reset_index(drop=True)


def _minmax(df: pd.DataFrame, by: list[str], col: str) -> pd.DataFrame:
    g = df.groupby(by)[col].agg(["mean", "min", "max"]).reset_index()
    return g.dropna(subset=["mean"])


def _line(a, s: pd.DataFrame, x: str, label: str, **kw) -> str:  # noqa: ANN001
    """Mean with min/max bars; returns the line's colour (its reinit is drawn dashed in it)."""
    bars = a.errorbar(s[x], s["mean"], yerr=[s["mean"] - s["min"], s["max"] - s["mean"]], marker="o", ms=3,
                      capsize=2, label=label, **kw)
    return bars.lines[0].get_color()


def _with_reinit(a, g: pd.DataFrame, label: str, reinit_label: str) -> None:  # noqa: ANN001
    """IMP's accuracy against remaining weights (min/max bars) and, dashed in its colour, its reinit's."""
    color = _line(a, _minmax(g, ["cycle_remaining_ratio"], "cycle_test_acc"), "cycle_remaining_ratio", label)
    if g["cycle_reinit_test_acc"].notna().any():
        _line(a, _minmax(g, ["cycle_remaining_ratio"], "cycle_reinit_test_acc"), "cycle_remaining_ratio",
              reinit_label, ls="--", color=color)


def _remaining_axis(a) -> None:  # noqa: ANN001
    a.set_xscale("log")
    a.invert_xaxis()
    a.set_xlabel("remaining weights (fraction, log)")


def fig1(runs: Runs) -> Figure | Missing:
    """Accuracy against sparsity for IMP and its reinit baseline, per batch size and warm-up."""
    trials = [t for t in _imp(runs) if t.imp_label == "IMP"]
    df = rounds(runs, trials)
    if df.empty or df["cycle"].nunique() < 2:
        return Missing("imp_fig1", "imp_quick", "needs IMP runs with >= 2 rounds")
    warmups = sorted(df["schedule.warmup_epochs"].fillna(0).unique())
    fig, ax = axes(ncols=len(warmups))  # a panel per warm-up, as the paper's Fig. 1
    for i, wu in enumerate(warmups):
        a = ax[0, i]
        for bs, g in df[df["schedule.warmup_epochs"].fillna(0) == wu].groupby("data.batch_size"):
            _with_reinit(a, g, f"IMP bs={bs}", f"reinit bs={bs}")
        _remaining_axis(a)
        a.set(ylabel="test accuracy", title=f"IMP and reinit, warm-up {wu:g} epochs")
        a.legend(fontsize=7)
    return Figure("imp_fig1", "IMP and reinit accuracy against sparsity",
                  "Test accuracy of each IMP round and of its random-reinit baseline against the remaining "
                  "fraction of weights (log), per batch size, a panel per warm-up; bars: min/max over seeds.",
                  "understanding-imp.txt Fig. 1", df, fig, parents_of(trials))


def _per_round(runs: Runs, key: str, name: str, ylabel: str, title: str, caption: str, paper: str,
               space: str, reinit: str | None = None) -> Figure | Missing:
    trials = [t for t in _imp(runs) if key in t.metrics]
    df = rounds(runs, trials)
    if df.empty or df[key].notna().sum() < 1:
        return Missing(name, space, f"needs IMP runs logging {key}")
    fig, ax = axes()
    a = ax[0, 0]
    for (variant, bs), g in df.groupby(["variant", "data.batch_size"]):
        color = _line(a, _minmax(g, ["cycle_remaining_ratio"], key), "cycle_remaining_ratio",
                      f"{variant} bs={bs}")
        if reinit and g[reinit].notna().any():
            _line(a, _minmax(g, ["cycle_remaining_ratio"], reinit), "cycle_remaining_ratio",
                  f"its reinit bs={bs}", ls="--", color=color)
    _remaining_axis(a)
    a.set(ylabel=ylabel, title=title)
    a.legend(fontsize=7)
    return Figure(name, title, caption, paper, df, fig, parents_of(trials))


def fig2(runs: Runs) -> Figure | Missing:
    return _per_round(runs, "cycle_instability", "imp_fig2", "instability (error increase)",
                      "Linear-interpolation instability per round",
                      "Instability max_α E(α) − (E(0)+E(1))/2 between two copies trained from the round's start "
                      "on different data orders, per round and batch size; bars: min/max over seeds.",
                      "understanding-imp.txt Fig. 2", "imp_quick --set method.lmc=true")


def fig6(runs: Runs) -> Figure | Missing:
    return _per_round(runs, "cycle_threshold", "imp_fig6", "pruning threshold |θ|", "Pruning threshold per round",
                      "The |θ| that pruning each round's final weights by p would cut, IMP (solid) and reinit "
                      "(dashed), per batch size.", "understanding-imp.txt Fig. 6", "imp_quick",
                      reinit="cycle_reinit_threshold")


def fig8(runs: Runs) -> Figure | Missing:
    """Errors along the linear path between successive rounds, and the barrier per round."""
    trials = [t for t in _imp(runs) if "cycle_successive_instability" in t.metrics]
    curves = []
    for t in trials:
        for path in runs.artifacts(t, "lmc"):
            local = runs.artifact(t, path)
            if local is not None:
                table = pq.read_table(local).to_pandas()
                curves.append(table[table["path"] == "successive"].assign(run_id=t.run_id))
    if not curves:
        return Missing("imp_fig8", "imp_quick --set method.lmc=true", "needs IMP runs with lmc/ artifacts")
    df = pd.concat(curves, ignore_index=True)
    mean = df.groupby(["round", "alpha"])["error"].mean().reset_index()
    fig, ax = axes(ncols=2)
    for r, g in mean.groupby("round"):
        ax[0, 0].plot(g["alpha"], g["error"], marker=".", label=f"round {r - 1} → {r}")
    ax[0, 0].set(xlabel="interpolation α", ylabel="test error", title="Linear path between successive rounds")
    ax[0, 0].legend(fontsize=7)
    rd = rounds(runs, trials)
    s = _minmax(rd, ["cycle_remaining_ratio"], "cycle_successive_instability")
    _line(ax[0, 1], s, "cycle_remaining_ratio", "max error increase")
    _remaining_axis(ax[0, 1])
    ax[0, 1].set(ylabel="error barrier", title="Barrier between successive rounds")
    return Figure("imp_fig8", "Error barriers between successive rounds",
                  "Left: test error along the linear path from round r−1's optimum (α=0) to round r's (α=1), mean "
                  "over seeds. Right: the barrier (maximum error increase) per remaining fraction.",
                  "understanding-imp.txt Fig. 8", df, fig, parents_of(trials))


def fig4(runs: Runs) -> Figure | Missing:
    """Angular distances between the retrained networks of every round pair and θ0."""
    from trainables.metrics.distances import distance_matrix

    trials = _imp(runs)
    if not trials:
        return Missing("imp_fig4", "imp_quick", "needs IMP runs with distances/ artifacts")
    # one setting (the paper's: regular IMP, one batch size), averaged over its seeds
    key = min({(t.imp_label != "IMP", t.p("data.batch_size"), t.imp_label) for t in trials})
    trials = [t for t in trials if (t.imp_label != "IMP", t.p("data.batch_size"), t.imp_label) == key]
    mats, used, labels = [], [], None
    for t in trials:
        paths = runs.artifacts(t, "distances")
        local = runs.artifact(t, paths[-1]) if paths else None
        if local is None:
            continue
        lab, m = distance_matrix(pq.read_table(local), "imp", "angular")
        if labels is None or lab == labels:
            labels, _ = lab, mats.append(m)
            used.append(t)
    if not mats or labels is None:
        return Missing("imp_fig4", "imp_quick", "needs IMP runs with distances/ artifacts")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair no run measured stays NaN
        m = np.nanmean(np.stack(mats), axis=0)
    data = pd.DataFrame(m, index=labels, columns=labels).reset_index().rename(columns={"index": "row"})
    fig, ax = axes(w=1.5 + 0.5 * len(labels), h=1 + 0.45 * len(labels))
    a = ax[0, 0]
    im = a.imshow(m, cmap="magma_r", vmin=0)
    a.set_xticks(range(len(labels)), labels, rotation=45, fontsize=8)
    a.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if np.isfinite(m[i, j]):
                a.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                       color="w" if m[i, j] > np.nanmax(m) / 2 else "k")
    fig.colorbar(im, ax=a, label="angular distance 2∠/π")
    a.set_title(f"Angular distances, {key[2]} bs={key[1]} ({len(mats)} seed(s))", fontsize=10)
    return Figure("imp_fig4", "Angular distances between retrained networks",
                  "2∠(θ_a⊙m, θ_b⊙m)/π on shared weights between the IMP optima of every pair of rounds; the "
                  "last row/column is θ0 (mean over runs of one setting).",
                  "understanding-imp.txt Fig. 4", data, fig, parents_of(used))


def fig5(runs: Runs) -> Figure | Missing:
    """Histogram of the surviving weights at the last round, IMP against its reinit."""
    trials = sorted(_imp(runs), key=lambda t: (t.imp_label != "IMP", t.p("data.batch_size") or 0))
    t = next((t for t in trials if runs.artifacts(t, "histograms")), None)
    if t is None:
        return Missing("imp_fig5", "imp_quick", "needs IMP runs with histograms/ artifacts")
    tables = [pq.read_table(runs.artifact(t, p)).to_pandas() for p in runs.artifacts(t, "histograms")]
    df = pd.concat(tables, ignore_index=True)
    last = int(df["round"].max())
    pick = df[df["round"] == last]
    fig, ax = axes()
    a = ax[0, 0]
    for kind, g in pick.groupby("kind"):
        a.stairs(g["count"].to_numpy(), np.append(g["left"].to_numpy(), g["right"].iloc[-1]), label=kind,
                 fill=kind == "imp", alpha=0.6)
    a.set(xlabel="weight value", ylabel="count", title=f"Surviving weights, round {last} ({t.imp_label}, bs={t.p('data.batch_size')})")
    a.legend()
    return Figure("imp_fig5", "Weight histograms", f"Histogram of the surviving weights after round {last} "
                  "for IMP and its reinit baseline (one run).", "understanding-imp.txt Fig. 5",
                  df.assign(run_id=t.run_id), fig, [t.parent_id])


def fig3(runs: Runs) -> Figure | Missing:
    """Repellent (or attractive) IMP against regular IMP, with their reinits, per batch size."""
    trials = _imp(runs)
    df = rounds(runs, trials)
    if df.empty or df["variant"].nunique() < 2:
        return Missing("imp_fig3", "imp_repulsion", "needs IMP runs with and without method.repel")
    fig, ax = axes()
    a = ax[0, 0]
    for (variant, bs), g in df.groupby(["variant", "data.batch_size"]):
        _with_reinit(a, g, f"{variant} bs={bs}", f"its reinit bs={bs}")
    _remaining_axis(a)
    a.set(ylabel="test accuracy", title="Repellent against regular IMP (reinit dashed)")
    a.legend(fontsize=7)
    return Figure("imp_fig3", "Repellent against regular IMP",
                  "Test accuracy per round of IMP with the repellent loss J_r and of regular IMP, each with "
                  "its random-reinit baseline (dashed), per batch size; bars: min/max over seeds.", "understanding-imp.txt Fig. 3", df, fig, parents_of(trials))


BUILDERS = [fig1, fig2, fig3, fig4, fig5, fig6, fig8]
