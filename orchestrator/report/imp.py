"""IMP figures (understanding-imp.txt) from IMP runs. The paper's error bars are the minimum
and maximum over seeds, so these are too."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from orchestrator.report.collect import Runs, Trial
from orchestrator.report.figure import Figure, Missing, axes, parents_of, path_arrow, ratio_axis
from trainables.keys import CYCLE_DENSITY, CYCLE_REINIT_TEST_ACC, CYCLE_TEST_ACC

ROUND_KEYS = [CYCLE_DENSITY, CYCLE_TEST_ACC, CYCLE_REINIT_TEST_ACC,
              "cycle/instability", "cycle/successive_instability", "cycle/threshold", "cycle/reinit_threshold"]


def _imp(runs: Runs) -> list[Trial]:
    return [t for t in runs.of("imp") if t.method == "imp" and CYCLE_TEST_ACC in t.metrics]  # not dense_lrr


def rounds(runs: Runs, trials: list[Trial]) -> pd.DataFrame:
    """One row per (run, IMP round): the round's metrics, IMP's and its reinit's (step = round)."""
    df = runs.per_step(trials, ROUND_KEYS, ["data.batch_size", "schedule.warmup_epochs", "run.seed"])
    if df.empty:
        return df
    df = df[df[CYCLE_TEST_ACC].notna() & df[CYCLE_DENSITY].notna()].rename(columns={"step": "round"})
    labels = {t.run_id: t.imp_label for t in trials}
    df.insert(1, "variant", df["run_id"].map(labels))
    df["sparsity"] = 1 - df[CYCLE_DENSITY]
    return df.reset_index(drop=True)


def _minmax(df: pd.DataFrame, by: list[str], col: str) -> pd.DataFrame:
    g = df.groupby(by)[col].agg(["mean", "min", "max"]).reset_index()
    return g.dropna(subset=["mean"])


def _line(a, s: pd.DataFrame, x: str, label: str, **kw) -> str:  # noqa: ANN001
    """Mean with min/max bars; returns the line's colour (its reinit is drawn dashed in it)."""
    s = s.sort_values(x, ascending=False)  # the order the rounds went
    bars = a.errorbar(s[x], s["mean"], yerr=[s["mean"] - s["min"], s["max"] - s["mean"]], marker="o", ms=3,
                      capsize=2, label=label, **kw)
    color = bars.lines[0].get_color()
    path_arrow(a, s[x], s["mean"], color)
    return color


def _with_reinit(a, g: pd.DataFrame, label: str, reinit_label: str) -> None:  # noqa: ANN001
    """IMP's accuracy against remaining weights (min/max bars) and, dashed in its colour, its reinit's."""
    color = _line(a, _minmax(g, [CYCLE_DENSITY], CYCLE_TEST_ACC), CYCLE_DENSITY, label)
    if CYCLE_REINIT_TEST_ACC in g and g[CYCLE_REINIT_TEST_ACC].notna().any():  # none: reinit_baseline=false
        _line(a, _minmax(g, [CYCLE_DENSITY], CYCLE_REINIT_TEST_ACC), CYCLE_DENSITY,
              reinit_label, ls="--", color=color)


def _remaining_axis(a, values) -> None:  # noqa: ANN001
    ratio_axis(a, values, label="remaining weights (fraction, log)")


def fig1(runs: Runs) -> Figure | Missing:
    """Accuracy against sparsity for IMP and its reinit baseline, per batch size and warm-up."""
    trials = [t for t in _imp(runs) if t.imp_label == "IMP"]
    df = rounds(runs, trials)
    if df.empty or df["round"].nunique() < 2:
        return Missing("imp_fig1", "imp_quick", "needs IMP runs with >= 2 rounds")
    warmups = sorted(df["schedule.warmup_epochs"].fillna(0).unique())
    fig, ax = axes(ncols=len(warmups))  # a panel per warm-up, as the paper's Fig. 1
    for i, wu in enumerate(warmups):
        a = ax[0, i]
        for bs, g in df[df["schedule.warmup_epochs"].fillna(0) == wu].groupby("data.batch_size"):
            _with_reinit(a, g, f"IMP bs={bs}", f"reinit bs={bs}")
        _remaining_axis(a, df[CYCLE_DENSITY])
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
        color = _line(a, _minmax(g, [CYCLE_DENSITY], key), CYCLE_DENSITY,
                      f"{variant} bs={bs}")
        if reinit and reinit in g and g[reinit].notna().any():  # none: reinit_baseline=false
            _line(a, _minmax(g, [CYCLE_DENSITY], reinit), CYCLE_DENSITY,
                  f"its reinit bs={bs}", ls="--", color=color)
    _remaining_axis(a, df[CYCLE_DENSITY])
    a.set(ylabel=ylabel, title=title)
    a.legend(fontsize=7)
    return Figure(name, title, caption, paper, df, fig, parents_of(trials))


def fig2(runs: Runs) -> Figure | Missing:
    return _per_round(runs, "cycle/instability", "imp_fig2", "instability (error increase)",
                      "Linear-interpolation instability per round",
                      "Instability max_α E(α) − (E(0)+E(1))/2 between two copies trained from the round's start "
                      "on different data orders, per round and batch size; bars: min/max over seeds.",
                      "understanding-imp.txt Fig. 2", "imp_quick --set method.lmc=true")


def fig6(runs: Runs) -> Figure | Missing:
    return _per_round(runs, "cycle/threshold", "imp_fig6", "pruning threshold |θ|", "Pruning threshold per round",
                      "The |θ| that pruning each round's final weights by p would cut, IMP (solid) and reinit "
                      "(dashed), per batch size.", "understanding-imp.txt Fig. 6", "imp_quick",
                      reinit="cycle/reinit_threshold")


def fig8(runs: Runs) -> Figure | Missing:
    """Errors along the linear path between successive rounds, and the barrier per round."""
    trials = [t for t in _imp(runs) if "cycle/successive_instability" in t.metrics]
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
    s = _minmax(rd, [CYCLE_DENSITY], "cycle/successive_instability")
    _line(ax[0, 1], s, CYCLE_DENSITY, "max error increase")
    _remaining_axis(ax[0, 1], s[CYCLE_DENSITY])
    ax[0, 1].set(ylabel="error barrier", title="Barrier between successive rounds")
    return Figure("imp_fig8", "Error barriers between successive rounds",
                  "Left: test error along the linear path from round r−1's optimum (α=0) to round r's (α=1), mean "
                  "over seeds. Right: the barrier (maximum error increase) per remaining fraction.",
                  "understanding-imp.txt Fig. 8", df, fig, parents_of(trials))


def _setting(t: Trial) -> tuple[bool, int, int, str]:
    """IMP's settings in the paper's order: regular IMP first, then by batch size and warm-up."""
    return (t.imp_label != "IMP", int(t.p("data.batch_size") or 0), int(t.p("schedule.warmup_epochs") or 0),
            t.imp_label)


def _setting_name(key: tuple[bool, int, int, str]) -> str:
    return f"{key[3]} bs={key[1]}" + (f" warm-up={key[2]}" if key[2] else "")


def _heatmap(a, m: np.ndarray, labels: list[str], vmax: float) -> Any:  # noqa: ANN001
    im = a.imshow(m, cmap="magma_r", vmin=0, vmax=vmax)
    a.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
    a.set_yticks(range(len(labels)), labels, fontsize=7)
    if len(labels) <= 12:  # the values stay readable
        for i in range(len(labels)):
            for j in range(len(labels)):
                if np.isfinite(m[i, j]):
                    a.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5,
                           color="w" if m[i, j] > vmax / 2 else "k")
    return im


MAX_PANELS = 6  # settings drawn side by side; the CSV holds them all


def fig4(runs: Runs) -> Figure | Missing:
    """Angular distances between the retrained networks of every round pair and θ0: one panel
    per setting (batch size, warm-up, repellent) and kind (IMP, its reinit), mean over seeds."""
    if not _imp(runs):  # skipped before importing torch
        return Missing("imp_fig4", "imp_quick", "needs IMP runs with distances/ artifacts")
    from trainables.metrics.distances import distance_matrix

    by_setting: dict[tuple, list[Trial]] = {}
    for t in _imp(runs):
        by_setting.setdefault(_setting(t), []).append(t)
    panels, rows, used = [], [], []
    for key in sorted(by_setting):
        for kind in ("imp", "reinit"):
            mats, labels = [], None
            for t in by_setting[key]:
                paths = runs.artifacts(t, "distances")
                local = runs.artifact(t, paths[-1]) if paths else None
                if local is None:
                    continue
                lab, m = distance_matrix(pq.read_table(local), kind, "angular")
                if len(lab) > 1 and (labels is None or lab == labels):
                    labels = lab
                    mats.append(m)
                    used.append(t)
            if not mats or labels is None:
                continue
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a pair no run measured stays NaN
                m = np.nanmean(np.stack(mats), axis=0)
            name = _setting_name(key) + (" (reinit)" if kind == "reinit" else "")
            panels.append((name, labels, m, len(mats)))
            rows += [{"setting": _setting_name(key), "kind": kind, "a": labels[i], "b": labels[j],
                      "angular": m[i, j], "runs": len(mats)}
                     for i in range(len(labels)) for j in range(len(labels))]
    if not panels:
        return Missing("imp_fig4", "imp_quick", "needs IMP runs with distances/ artifacts")
    shown = panels[:MAX_PANELS]
    size = max(len(p[1]) for p in shown)
    fig, ax = axes(ncols=len(shown), w=1.6 + 0.42 * size, h=1.2 + 0.42 * size)
    vmax = max(float(np.nanmax(p[2])) for p in shown) or 1.0
    for a, (name, labels, m, n) in zip(ax[0], shown, strict=True):
        im = _heatmap(a, m, labels, vmax)
        a.set_title(f"{name}\n{n} seed(s)", fontsize=8)
    fig.colorbar(im, ax=list(ax[0]), label="angular distance 2∠/π", shrink=0.8)
    more = f"; {len(panels) - len(shown)} more setting(s) in the CSV" if len(panels) > len(shown) else ""
    return Figure("imp_fig4", "Angular distances between retrained networks",
                  "2∠(θ_a⊙m, θ_b⊙m)/π on shared weights between the optima of every pair of rounds, per setting "
                  f"(IMP, then its random reinit); the last row/column is θ0; mean over seeds{more}.",
                  "understanding-imp.txt Fig. 4", pd.DataFrame(rows), fig, parents_of(used))


HIST_ROUND = 10  # the paper's Fig. 5: after 10 pruning rounds


def fig5(runs: Runs) -> Figure | Missing:
    """Histograms of the surviving weights after round 10 (or the last one a run reached), IMP
    filled against its reinit, one panel per setting (its first seed)."""
    first: dict[tuple, Trial] = {}
    for t in sorted(_imp(runs), key=lambda t: (_setting(t), t.p("run.seed") or 0)):
        if _setting(t) not in first and runs.artifacts(t, "histograms"):
            first[_setting(t)] = t
    if not first:
        return Missing("imp_fig5", "imp_quick", "needs IMP runs with histograms/ artifacts")
    picks = []
    for key, t in first.items():
        tables = [pq.read_table(runs.artifact(t, p)).to_pandas() for p in runs.artifacts(t, "histograms")]
        df = pd.concat(tables, ignore_index=True)
        shown_round = min(HIST_ROUND, int(df["round"].max()))
        picks.append((key, t, df[df["round"] == shown_round].assign(setting=_setting_name(key), run_id=t.run_id)))
    shown = picks[:MAX_PANELS]
    fig, ax = axes(ncols=len(shown), w=4.2, h=3.2)
    for a, (key, _, pick) in zip(ax[0], shown, strict=True):
        for kind, g in pick.groupby("kind"):
            a.stairs(g["count"].to_numpy(), np.append(g["left"].to_numpy(), g["right"].iloc[-1]), label=kind,
                     fill=kind == "imp", alpha=0.6)
        a.set(xlabel="weight value", ylabel="count")
        a.set_title(f"{_setting_name(key)}, round {int(pick['round'].iloc[0])}", fontsize=9)
        a.legend(fontsize=7)
    data = pd.concat([p[2] for p in picks], ignore_index=True)
    return Figure("imp_fig5", "Weight histograms", f"Histogram of the surviving weights after round {HIST_ROUND} "
                  "(or the last round a run reached) for IMP (filled) and its reinit baseline, one run per "
                  "setting.", "understanding-imp.txt Fig. 5", data, fig, [t.parent_id for _, t, _ in picks])


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
    _remaining_axis(a, df[CYCLE_DENSITY])
    a.set(ylabel="test accuracy", title="Repellent against regular IMP (reinit dashed)")
    a.legend(fontsize=7)
    return Figure("imp_fig3", "Repellent against regular IMP",
                  "Test accuracy per round of IMP with the repellent loss J_r and of regular IMP, each with "
                  "its random-reinit baseline (dashed), per batch size; bars: min/max over seeds.", "understanding-imp.txt Fig. 3", df, fig, parents_of(trials))


BUILDERS = [fig1, fig2, fig3, fig4, fig5, fig6, fig8]
