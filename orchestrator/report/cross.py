"""Across families (beyond the papers): accuracy and exploration against density for every
EP, iEP, DST, IMP and dense run of the experiment, on one chart."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.report.collect import Runs, Trial, differing_keys, sweep_name
from orchestrator.report.figure import Figure, Missing, axes, parents_of, path_arrow, ratio_axis
from orchestrator.tracking.labels import SHORT_KEYS
from orchestrator.tracking.tags import SWEPT_TAG, VARIANT_TAG
from trainables.config import VARIANT_KEY, label_of, method_short_keys
from trainables.keys import CYCLE_DENSITY, CYCLE_DYING_RATIO, CYCLE_TEST_ACC, INFER_SPEEDUP_KEY


def density(t: Trial) -> float:
    """The final fraction of weights kept, from what the run logged (its config when it logs none)."""
    if CYCLE_DENSITY in t.metrics:
        return t.metrics[CYCLE_DENSITY]
    if "density" in t.metrics:
        return t.metrics["density"]
    if t.method == "dst":
        return float(t.p("method.density"))
    return 1.0


def dying(t: Trial) -> float:
    """The run's final dying ratio; DST logs its ITOP rate, whose complement it is."""
    if "dying_ratio" in t.metrics:
        return t.metrics["dying_ratio"]
    if "itop" in t.metrics:
        return 1.0 - t.metrics["itop"]
    return np.nan


def method_label(t: Trial) -> str:
    pattern = str(t.p("sparsity.pattern", "unstructured"))
    base = _family_label(t)
    return base if pattern == "unstructured" else f"{base} {pattern}"  # N:M runs apart from unstructured


def _family_label(t: Trial) -> str:
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
                        "dying_ratio": dying(t),
                        "infer_speedup": t.metrics.get(INFER_SPEEDUP_KEY, np.nan)} for t in trials])
    # iterative runs (iEP cycles, IMP rounds) also pass through every earlier density: their path
    cycled = [t for t in trials if t.method in ("iep", "imp", "dense_lrr") and CYCLE_DENSITY in t.metrics]
    path = runs.per_step(cycled, [CYCLE_DENSITY, CYCLE_TEST_ACC, CYCLE_DYING_RATIO], [])
    if len(path):
        path = path.dropna(subset=[CYCLE_DENSITY, CYCLE_TEST_ACC]).rename(columns={
            "step": "cycle", CYCLE_DENSITY: "density", CYCLE_TEST_ACC: "test_acc",
            CYCLE_DYING_RATIO: "dying_ratio"})
        labels = {t.run_id: (t.family, method_label(t)) for t in cycled}
        path["family"] = path["run_id"].map(lambda r: labels[r][0])
        path["method"] = path["run_id"].map(lambda r: labels[r][1])
        df = pd.concat([df, path.reindex(columns=df.columns)], ignore_index=True)
    speed = bool(df["infer_speedup"].notna().any())  # trials that measured their exported network
    fig, ax = axes(ncols=3 if speed else 2, w=6.0, h=4.4)
    methods = sorted(df["method"].unique())
    markers = dict(zip(methods, "osD^v<>ph*X", strict=False))
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    # methods at one density (EP and soft iEP end where the tour matches them) would hide each
    # other: each method's markers sit a little apart along the (log) density axis
    dodge = {m: 1.0 + 0.025 * (i - (len(methods) - 1) / 2) for i, m in enumerate(methods)}
    for (method, _run_id), g in df[df["cycle"].notna()].groupby(["method", "run_id"]):
        g = g.sort_values("cycle")
        x = g["density"] * dodge[method]
        for a, key in ((ax[0, 0], "test_acc"), (ax[0, 1], "dying_ratio")):
            if g[key].notna().any():
                a.plot(x, g[key], "-", marker=markers.get(method, "o"), ms=3, mfc="none", color=colors[method],
                       alpha=0.6, lw=1)
                path_arrow(a, x, g[key], colors[method])
    final = df[df["cycle"].isna()]
    for method, g in final.groupby("method"):
        kw = {"marker": markers.get(method, "o"), "color": colors[method], "label": method, "s": 46,
              "edgecolors": "black", "linewidths": 0.6, "zorder": 3}
        x = g["density"] * dodge[method]
        ax[0, 0].scatter(x, g["test_acc"], **kw)
        if g["dying_ratio"].notna().any():
            ax[0, 1].scatter(x, g["dying_ratio"], **kw)
        if speed and g["infer_speedup"].notna().any():
            ax[0, 2].scatter(g["infer_speedup"], g["test_acc"], **kw)
    if speed:
        ax[0, 2].axvline(1.0, color="0.6", lw=0.8, ls=":")
        ax[0, 2].set(xlabel="measured inference speed-up over dense (infer_speedup)", ylabel="test accuracy",
                     title="Accuracy against measured speed-up")
        ax[0, 2].legend(fontsize=7)
    for a, ylabel in ((ax[0, 0], "test accuracy"), (ax[0, 1], "dying ratio (never-active weights)")):
        ratio_axis(a, df["density"], label="density (fraction of weights kept, log)", invert=False)
        a.set_ylabel(ylabel)
        a.legend(fontsize=7)
    ax[0, 0].set_title("Accuracy against density")
    ax[0, 1].set_title("Exploration against density")
    return Figure("cross_families", "All families: accuracy and exploration against density",
                  "Final test accuracy (left) and dying ratio (right; for DST 1 − ITOP; IMP logs none) "
                  "against the final density, one filled marker per run, for every family in the experiment "
                  "(methods at the same density drawn slightly apart); lines with hollow markers and an "
                  "arrow: the per-cycle (iEP) or per-round (IMP) path of iterative runs, from density 1 "
                  "towards their final density. Third panel, where runs measured it: test accuracy against the "
                  "measured inference speed-up of the exported network over dense.",
                  "none (across the three papers)", df, fig, parents_of(trials))


def _variant(t: Trial) -> str:
    return t.tags.get(VARIANT_TAG) or method_label(t)


def _short(key: str) -> str:
    return {**method_short_keys(), **SHORT_KEYS}.get(key, key.rsplit(".", 1)[-1])


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def overview(runs: Runs, parent_id: str, parent: object) -> Figure | Missing:
    """One sweep at a glance, in its space's words: for named variants one labelled point per
    variant (mean over seeds, min-max bar), for a grid accuracy against its swept axis (a line
    per setting of the other swept keys), with the dying ratio beside it where logged."""
    trials = [t for t in runs.trials if t.parent_id == parent_id and "test_acc" in t.metrics]
    name = "sweep_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in sweep_name(parent))
    space = parent.data.params.get("space", "?")
    if not trials:
        return Missing(name, space, "the sweep has no finished trial")
    tagged = [k for k in parent.data.tags.get(SWEPT_TAG, "").split(",") if k]
    swept = [k for k in (tagged or differing_keys(trials)) if k != "run.seed"]
    variants = VARIANT_KEY in swept or any(VARIANT_TAG in t.tags for t in trials)
    keys = [k for k in swept if k != VARIANT_KEY]
    numeric = next((k for k in keys if all(_is_number(t.p(k)) for t in trials)
                    and len({t.p(k) for t in trials}) > 1), None)
    others = [k for k in keys if k != numeric]
    df = pd.DataFrame([{"run_id": t.run_id, "seed": t.p("run.seed"), "method": method_label(t),
                        **({"variant": _variant(t)} if variants else {}),
                        **{k: t.p(k) for k in keys}, "test_acc": t.metrics["test_acc"],
                        "density": density(t), "dying_ratio": dying(t)} for t in trials])
    df["setting"] = df.apply(lambda r: ", ".join(
        ([str(r["variant"])] if variants and numeric else [])
        + [f"{_short(k)}={r[k]}" for k in others]), axis=1)
    dying_logged = bool(df["dying_ratio"].notna().any())
    fig, ax = axes(ncols=2 if dying_logged else 1, w=6.0, h=4.2)
    panels = [(ax[0, 0], "test_acc", "final test accuracy")]
    if dying_logged:
        dst = any(t.method == "dst" for t in trials)
        panels.append((ax[0, 1], "dying_ratio", "final dying ratio" + (" (DST: 1 − ITOP)" if dst else "")))
    if numeric:
        xlabel = f"{_short(numeric)} ({numeric})"
        for a, key, ylabel in panels:
            for setting, g in df.groupby("setting", sort=True):
                m = g.groupby(numeric)[key].agg(["mean", "min", "max"]).dropna().sort_index()
                if m.empty:
                    continue
                a.errorbar(m.index, m["mean"], yerr=[m["mean"] - m["min"], m["max"] - m["mean"]], marker="o",
                           ms=4, capsize=2, label=setting or key.replace("_", " "))
            a.set(xlabel=xlabel, ylabel=ylabel)
            if df["setting"].nunique() <= 10:  # beyond that a legend hides the plot: the CSV names them
                a.legend(fontsize=7, title=", ".join(_short(k) for k in others) or None, title_fontsize=7)
    else:
        by = "variant" if variants else "setting"
        order = list(df.groupby(by, sort=False)["test_acc"].mean().sort_values(ascending=False).index)
        for a, key, ylabel in panels:
            m = df.groupby(by)[key].agg(["mean", "min", "max"]).reindex(order)
            xs = np.arange(len(order))
            ok = m["mean"].notna().to_numpy()
            a.errorbar(xs[ok], m["mean"][ok], yerr=[(m["mean"] - m["min"])[ok], (m["max"] - m["mean"])[ok]],
                       fmt="o", ms=6, capsize=3, color="C0")
            for x, (_label, row) in zip(xs, m.iterrows(), strict=True):
                if np.isfinite(row["mean"]):
                    a.annotate(f"{row['mean']:.3f}", (x, row["mean"]), textcoords="offset points",
                               xytext=(6, 0), fontsize=7, va="center")
            a.set_xticks(xs, [str(v) for v in order], rotation=30 if len(order) > 4 else 0, ha="right"
                         if len(order) > 4 else "center", fontsize=8)
            a.set_xlim(-0.5, len(order) - 0.5)
            a.set(xlabel="variant (the space's named methods)" if variants else ", ".join(_short(k) for k in keys)
                  or "setting", ylabel=ylabel)
    ax[0, 0].set_title(f"{parent.info.run_name}", fontsize=9)
    seeds = df["seed"].nunique()
    what = ("variants " + ", ".join(sorted(df["variant"].unique())) if variants else
            ", ".join(keys) or "nothing")
    return Figure(name, f"Sweep {parent.info.run_name}: results",
                  f"Final test accuracy (and dying ratio where logged) of sweep {parent.info.run_name} "
                  f"(space {space}) against what it varies ({what}); mean over {seeds} seed(s), bars min-max.",
                  "none (the sweep's overview)", df, fig, [parent_id])


def sweeps(runs: Runs) -> list[Figure | Missing]:
    """Per sweep: its overview (`overview`)."""
    return [overview(runs, parent_id, parent) for parent_id, parent in runs.parents.items()]


BUILDERS = [chart, sweeps]
