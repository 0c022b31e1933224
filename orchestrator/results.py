"""What a finished sweep shows: the trial table, seed means, per-cycle tables, and figures.

Inputs are Tune's `ResultGrid` (each trial's last metrics and its whole report history,
`metrics_dataframe`) and the sweep's `Plan`, so the numbers are exactly what the trials
reported and what the MLflow runs hold. Iterative methods get a second table, one row per
(configuration, cycle): the accuracy and dying ratio at each cycle's remaining ratio, as the
strong-lottery paper's Fig. 3b and 5a plot them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from orchestrator.cluster.nodes import MACHINE_KEY, NODE_KEY
from orchestrator.recovery import error_summary
from orchestrator.tuner.schedulers import describe_stops, stopped_at
from search_spaces import Plan
from trainables.keys import (
    CYCLE_STEP_KEY,
    CYCLE_TEST_ACC,
    DIVERGED_KEY,
    DYING_RATIO_ALL_CYCLES,
    INFER_SPEEDUP_KEY,  # measured at the end of a sparse trial
    REPLAYED_KEY,
    cycle_key,
)

# Shown when some trial reported them (dense training has no dying ratio).
SHOWN_METRICS = ("test_acc", "dying_ratio", "k_minus_dying", "density", INFER_SPEEDUP_KEY, "epoch")
# Per-cycle metrics of the cycle table, in display order.
CYCLE_METRICS = tuple(cycle_key(m) for m in (
    "density", "test_acc", "train_acc", "dying_ratio", "dying_ratio_apparent", DYING_RATIO_ALL_CYCLES,
    # IMP rounds (understanding-imp.txt): its reinit baseline, distances, stability
    "reinit_test_acc", "reinit_train_acc", "distance_prev", "distance_init",
    "threshold", "reinit_threshold", "instability", "successive_instability"))


def swept_keys(plan: Plan) -> list[str]:
    """Keys that differ between trials: grid axes, the variant, Optuna's axes."""
    return [*plan.grid, *(["variant"] if plan.variants else []), *plan.optuna_space]


def results_table(results: Any, plan: Plan, metric: str, mode: str) -> Any:
    """One row per trial: swept keys, last metrics, status (OK / STOPPED / INCOMPLETE / ERROR);
    `stopped_at` (epoch or cycle) for trials ASHA stopped, `node` (the machine) when several
    machines ran trials. Rows by the metric, ties by the swept keys: a resumed sweep's table
    equals an uninterrupted one's (trial ids aside)."""
    import pandas as pd

    swept = swept_keys(plan)
    rows = []
    for r in results:
        config = r.config or {}
        metrics = r.metrics or {}
        row: dict[str, Any] = {"trial": metrics.get("trial_id", "")}
        row.update({k: config.get(k) for k in swept})
        row.update({m: metrics.get(m) for m in SHOWN_METRICS})
        done = metrics.get("epoch") == plan.resolve(config).total_epochs if config else False
        stop = stopped_at(metrics)
        row["status"] = "ERROR" if r.error else ("OK" if done else ("STOPPED" if stop else "INCOMPLETE"))
        if not r.error and metrics.get(DIVERGED_KEY):  # loss NaN/inf: the trial stopped at once
            row["status"] = "DIVERGED"
        row["error"] = error_summary(r.error) if r.error else None  # e.g. out of memory, and why
        row["stopped_at"] = f"{stop[0]} {stop[1]}" if stop else None
        row["node"] = metrics.get(MACHINE_KEY) or None
        rows.append(row)
    df = pd.DataFrame(rows)
    empty = [m for m in (*SHOWN_METRICS, "stopped_at", "error") if m in df and df[m].isna().all()]
    if "node" in df and df["node"].nunique() < 2:
        empty.append("node")
    df = df.drop(columns=empty)
    if "stopped_at" in df:
        df["stopped_at"] = df["stopped_at"].fillna("")
    if len(df):
        shown = [k for k in swept if k in df]
        ties = df[shown].astype(str).agg("\x1f".join, axis=1) if shown else ""
        by, ascending = (["_ties"], [True]) if metric not in df else ([metric, "_ties"], [mode == "min", True])
        df = (df.assign(_ties=ties).sort_values(by, ascending=ascending, kind="mergesort", na_position="last")
              .drop(columns="_ties"))
    return df


def per_group_text(summary: Any) -> str:
    """The per-cycle table, one block per method when methods log different metrics (iEP's dying
    ratios, IMP's distances): one wide table would be mostly NaN."""
    if summary.index.nlevels < 2:
        return summary.to_string()
    groups = list(dict.fromkeys(summary.index.get_level_values(0)))
    blocks = [summary.xs(g, level=0, drop_level=False).dropna(axis=1, how="all") for g in groups]
    if len(groups) < 2 or all(list(b.columns) == list(summary.columns) for b in blocks):
        return summary.to_string()
    return "\n\n".join(b.to_string() for b in blocks)


def unfinished_trials(df: Any, plan: Plan) -> int:
    """Trials to resume: those that ran but did not finish, and those an interrupt kept Tune
    from creating (Optuna suggests the next trial only after one completes)."""
    ran = int((df["status"] == "INCOMPLETE").sum()) if len(df) else 0
    return ran + max(0, plan.trial_count() - len(df))


def trial_frame(df: Any, results: Any, plan: Plan) -> Any:
    """The full trial table: status, node, every resolved config key and every final metric.

    One row per trial, for analysis (pandas/pyarrow read it back with its types), where the
    printed table shows only what varies."""
    import pandas as pd

    status = dict(zip(df["trial"], df["status"], strict=True)) if "trial" in df else {}
    rows = []
    for r in results:
        metrics = dict(r.metrics or {})
        trial = metrics.get("trial_id", "")
        row: dict[str, Any] = {"trial": trial, "status": status.get(trial)}
        stop = stopped_at(metrics)
        row["stopped_at"] = f"{stop[0]} {stop[1]}" if stop else None
        row[NODE_KEY] = metrics.get(NODE_KEY)
        row[MACHINE_KEY] = metrics.get(MACHINE_KEY)
        row["error"] = None if r.error is None else str(r.error).splitlines()[0][:500]
        if r.config:
            if "variant" in r.config:
                row["variant"] = r.config["variant"]
            row.update(plan.resolve(r.config).to_flat())
        row.update({k: v for k, v in metrics.items()
                    if k not in row and k not in ("config", REPLAYED_KEY) and (v is None or isinstance(v, (bool, int, float, str)))})
        rows.append(row)
    return pd.DataFrame(rows)


def write_parquet(frame: Any, path: Path) -> Path:
    """Parquet with a type per column: tuples become lists; a column mixing types (a swept key
    that is a number in one trial and a string in another) is written as strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = frame.copy()
    for col in frame.columns:
        frame[col] = frame[col].map(lambda v: list(v) if isinstance(v, tuple) else v)
        try:
            pa.array(frame[col], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            frame[col] = frame[col].map(lambda v: None if v is None else str(v))
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def group_keys(plan: Plan) -> list[str]:
    """Swept keys but the seed: what a mean over seeds groups by."""
    return [k for k in [*plan.grid, *(["variant"] if plan.variants else [])] if k != "run.seed"]


def seed_summary(df: Any, plan: Plan) -> Any:
    """Finished trials grouped by every swept key but the seed: mean and std of each metric."""
    seeds = plan.grid.get("run.seed", ())
    keys = group_keys(plan)
    ok = df[df["status"] == "OK"]
    if len(seeds) < 2 or ok.empty:
        return None
    shown = [m for m in SHOWN_METRICS if m != "epoch" and m in ok and ok[m].notna().any()]
    table = ok.groupby(keys)[shown].agg(["mean", "std"]) if keys else ok[shown].agg(["mean", "std"])
    return table


def cycle_table(results: Any, plan: Plan) -> Any:
    """One row per (trial, cycle) of the trials with more than one cycle; None if there are none."""
    import pandas as pd

    swept = swept_keys(plan)
    frames = []
    for r in results:
        history = getattr(r, "metrics_dataframe", None)
        if r.error is not None or history is None or CYCLE_TEST_ACC not in history:
            continue
        # a report replayed after a restore repeats its cycle's end: keep the first. IMP's
        # rounds report in phases (reinit, then IMP) at one cycle_step: one row per round.
        number = CYCLE_STEP_KEY if CYCLE_STEP_KEY in history else "cycle"
        ends = history[history[number].notna()] if number in history else history.iloc[:0]
        ends = ends.groupby(number, sort=True).agg("first").reset_index()
        ends = ends[ends[CYCLE_TEST_ACC].notna()]
        if ends.empty or not plan.resolve(r.config).method.cycle_count() > 1:
            continue
        frame = pd.DataFrame({"trial": (r.metrics or {}).get("trial_id", ""), "cycle": ends[number].astype(int)})
        for k in swept:
            frame[k] = [r.config.get(k)] * len(frame)
        for m in CYCLE_METRICS:
            frame[m] = ends[m].to_numpy() if m in ends else math.nan
        frames.append(frame)
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    return table.dropna(axis=1, how="all")


def cycle_summary(cycles: Any, plan: Plan) -> Any:
    """Mean and standard error over seeds of each cycle metric, per configuration and cycle."""
    keys = [*group_keys(plan), "cycle"]
    shown = [m for m in CYCLE_METRICS if m in cycles]
    grouped = cycles.groupby(keys)
    table = grouped[shown].mean()
    n = grouped[CYCLE_TEST_ACC].count()
    if int(n.max()) > 1:
        for m in (CYCLE_TEST_ACC, cycle_key("dying_ratio"), cycle_key("reinit_test_acc")):
            if m in shown:
                table[f"{m}_se"] = grouped[m].std() / n.pow(0.5)
    table["seeds"] = n
    return table


def show_results(df: Any, results: Any, plan: Plan, metric: str, mode: str,
                 out_dir: Path | None) -> list[Path]:
    """Print the tables; write them under `out_dir`; return the files written (the figures
    are orchestrator.report's)."""
    import pandas as pd

    written: list[Path] = []
    cycles = cycle_table(results, plan)
    summary = cycle_summary(cycles, plan) if cycles is not None else None
    with pd.option_context("display.max_rows", 400, "display.max_columns", 30, "display.width", 200,
                           "display.float_format", "{:.4f}".format):
        print("\nResults (sorted by " + metric + "):")
        print(df.to_string(index=False))
        stops = describe_stops([stopped_at(r.metrics or {}) for r in results], len(df))
        if stops:
            print(stops)
        seeds = seed_summary(df, plan)
        if seeds is not None:
            print(f"\nMean ± std over {len(plan.grid['run.seed'])} seeds (as the paper's tables report):")
            print(seeds.to_string())
        if summary is not None:
            se = " (mean, standard error over seeds)" if f"{CYCLE_TEST_ACC}_se" in summary else ""
            print(f"\nPer cycle{se}:")
            print(per_group_text(summary))
    ok = [r for r in results if r.error is None and r.metrics and metric in r.metrics]
    if ok:
        best = max(ok, key=lambda r: r.metrics[metric] * (1 if mode == "max" else -1))
        cfg = plan.resolve(best.config)
        print(f"\nBest trial: {metric}={best.metrics[metric]:.4f}"
              + (f", dying ratio d_T={best.metrics['dying_ratio']:.4f}" if "dying_ratio" in best.metrics else "")
              + f"\n  config {cfg.hash()}: " + " ".join(f"{k}={v}" for k, v in cfg.non_default().items()))
    if out_dir is None:
        return written
    df.to_csv(out_dir / "results.csv", index=False)
    written.append(out_dir / "results.csv")
    written.append(write_parquet(trial_frame(df, results, plan), out_dir / "results.parquet"))
    if cycles is not None and summary is not None:
        cycles.to_csv(out_dir / "cycles.csv", index=False)
        summary.reset_index().to_csv(out_dir / "cycles_summary.csv", index=False)
        written += [out_dir / "cycles.csv", out_dir / "cycles_summary.csv"]
    return written
