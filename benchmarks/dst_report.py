"""Fig. 1, Fig. 3, Fig. 6a/6b, ITOP and loss-gap tables of a finished DST sweep (Markdown).

Reads what the sweep left in Tune's results directory (no MLflow needed): each trial's
`result.json` (per-epoch metrics) and its last checkpoint (`config.json`, `masks.parquet`,
`artifacts/criteria_jaccard/cycle_01.parquet`). Every number comes from the functions in
`trainables.metrics` (eq. 1, J_r, ranks with Friedman / Nemenyi).

    python -m benchmarks.dst_report sparsesweep-runs/tune/dst_quick_readme --jaccard-density 0.2

Without a directory it reports the newest `dst_quick*` sweep under ./sparsesweep-runs/tune.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from trainables.config import ExperimentConfig
from trainables.metrics.criteria_jaccard import jaccard_matrix, mask_jaccard_matrix
from trainables.metrics.loss_gap import loss_gap
from trainables.metrics.ranking import rank_methods
from trainables.sparse.mask_io import read_masks

FIG1_CRITERIA = ("magnitude", "set", "mest", "rsensitivity", "snip")


@dataclass
class Trial:
    cfg: ExperimentConfig
    epochs: list[dict[str, Any]]
    checkpoint: Path

    @property
    def label(self) -> str:
        m = self.cfg.method
        if m.density >= 1:
            return "dense"
        if m.update_period == 0:
            return "static"
        return f"{m.criterion}+{m.growth}"

    @property
    def final(self) -> dict[str, Any]:
        return self.epochs[-1]


def load_trials(sweep: Path) -> list[Trial]:
    trials = []
    for trial_dir in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.startswith("trial_")):
        ckpts = sorted(trial_dir.glob("checkpoint_*"))
        results = trial_dir / "result.json"
        if not ckpts or not results.is_file():
            continue
        cfg = ExperimentConfig.from_json((ckpts[-1] / "config.json").read_text())
        epochs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        if cfg.method.name != "dst" or not epochs or epochs[-1].get("epoch") != cfg.total_epochs:
            continue  # unfinished or not DST
        trials.append(Trial(cfg, epochs, ckpts[-1]))
    return trials


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (pandas' to_markdown needs tabulate, not installed)."""
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| | " + " | ".join(map(str, df.columns)) + " |"
    rule = "| --- " * (len(df.columns) + 1) + "|"
    body = ["| " + " | ".join([str(i), *(cell(v) for v in row)]) + " |" for i, row in zip(df.index, df.values, strict=True)]
    return "\n".join([head, rule, *body])


def _fmt(values: list[float]) -> str:
    if not values:
        return ""
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.4f}"


def accuracy_table(trials: list[Trial], metric: str = "test_acc") -> pd.DataFrame:
    """Fig. 1: rows criterion+growth / static / dense, columns densities; mean ± std over seeds."""
    dense = [t.final[metric] for t in trials if t.label == "dense"]
    densities = sorted({t.cfg.method.density for t in trials if t.label != "dense"}, reverse=True)
    labels = list(dict.fromkeys(t.label for t in trials if t.label not in ("dense", "static")))
    table = pd.DataFrame(index=[*labels, "static", "dense"], columns=[f"D={d}" for d in densities], dtype=object)
    for label in [*labels, "static"]:
        for d in densities:
            vals = [t.final[metric] for t in trials if t.label == label and t.cfg.method.density == d]
            table.loc[label, f"D={d}"] = _fmt(vals)
    for d in densities:
        table.loc["dense", f"D={d}"] = _fmt(dense)
    return table


def ranks(trials: list[Trial], criteria: tuple[str, ...], which: str) -> str:
    """Fig. 3: average ranks over (growth, density) blocks, Friedman p, Nemenyi CD."""
    rows = [{"criterion": t.cfg.method.criterion, "growth": t.cfg.method.growth,
             "density": t.cfg.method.density, "test_acc": t.final["test_acc"]}
            for t in trials if t.label not in ("dense", "static") and t.cfg.method.criterion in criteria]
    df = pd.DataFrame(rows)
    pick = {"all": df, "D <= 0.2": df[df.density <= 0.2], "D > 0.2": df[df.density > 0.2]}[which]
    try:
        r = rank_methods(pick, blocks=["growth", "density"])
    except ValueError as e:
        return f"| {which} | not enough blocks ({e}) | | |"
    avg = ", ".join(f"{k} {v:.2f}" for k, v in r.average_ranks.items())
    same = "; ".join(f"{a}~{b}" for a, b in r.not_different()) or "none"
    return (f"| {which} ({r.n_blocks} blocks) | {avg} | χ²={r.friedman_statistic:.2f}, p={r.friedman_p:.3g} "
            f"| CD={r.critical_difference:.2f}; not different: {same} |")


def first_update_jaccard(trials: list[Trial], density: float) -> pd.DataFrame:
    """Fig. 6a: every criterion's prune set at the first update, same state; mean over seeds.

    The state at the first update does not depend on the criterion (none has acted yet), so
    the runs driven by magnitude + random growth give it, one per seed.
    """
    rows = []
    for t in trials:
        m = t.cfg.method
        if (m.criterion, m.growth, m.density, m.update_period > 0) != ("magnitude", "random", density, True):
            continue
        path = t.checkpoint / "artifacts" / "criteria_jaccard" / "cycle_01.parquet"
        table = pq.read_table(path).to_pandas()
        rows.append(table[table["update"] == 1].assign(seed=t.cfg.run.seed))
    if not rows:
        raise ValueError(f"no magnitude+random run at density {density} with a criteria_jaccard table")
    return jaccard_matrix(pd.concat(rows))


def final_mask_jaccard(trials: list[Trial], density: float, growth: str = "gradient") -> pd.DataFrame:
    """Fig. 6b: final masks of runs from the same init (seed), eq. 1, mean over seeds; J_init row."""
    by_seed: dict[int, dict[str, Any]] = {}
    j_init: dict[str, list[float]] = {}
    j_rand: list[float] = []
    for t in trials:
        m = t.cfg.method
        if m.growth != growth or m.density != density or t.label in ("static", "dense"):
            continue
        by_seed.setdefault(t.cfg.run.seed, {})[m.criterion] = read_masks(t.checkpoint / "masks.parquet")
        j_init.setdefault(m.criterion, []).append(t.final["cycle/jaccard_init"])
        j_rand.append(t.final["cycle/jaccard_init_random"])
    mats = [mask_jaccard_matrix(masks) for masks in by_seed.values()]
    if not mats:
        raise ValueError(f"no {growth}-growth runs at density {density}")
    mean = sum(mats[1:], mats[0]) / len(mats)
    mean.loc["J_init"] = pd.Series({c: float(np.mean(v)) for c, v in j_init.items()})
    mean.loc["J_init (random masks)"] = float(np.mean(j_rand))
    return mean


def itop_and_gap(trials: list[Trial], density: float) -> pd.DataFrame:
    """Appendix E (final ITOP) and Fig. 4 (loss gap val − train, last epoch and its maximum)."""
    out: dict[str, dict[str, str]] = {}
    for label in dict.fromkeys(t.label for t in trials):
        pick = [t for t in trials if t.label == label and (label == "dense" or t.cfg.method.density == density)]
        if not pick:
            continue
        gaps = [loss_gap([e.get("test_loss") for e in t.epochs], [e["train_loss"] for e in t.epochs]) for t in pick]
        out[label] = {"ITOP": _fmt([t.final["itop"] for t in pick]),
                      "loss gap (last)": _fmt([g[-1] for g in gaps]),
                      "loss gap (max)": _fmt([float(np.nanmax(g)) for g in gaps])}
    return pd.DataFrame(out).T


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", nargs="?", help="Tune results dir of the sweep (default: newest dst_quick*)")
    p.add_argument("--jaccard-density", type=float, action="append",
                   help="densities of the Jaccard / ITOP tables (repeatable; default 0.2)")
    args = p.parse_args(argv)
    if args.sweep:
        sweep = Path(args.sweep)
    else:
        found = sorted(Path("sparsesweep-runs/tune").glob("dst_quick*"), key=lambda q: q.stat().st_mtime)
        if not found:
            print("no dst_quick sweep under sparsesweep-runs/tune (run one, or pass a sweep directory)",
                  file=sys.stderr)
            return 0  # nothing to report is not a failure of `make bench`
        sweep = found[-1]
    trials = load_trials(sweep)
    print(f"# DST report: {sweep} ({len(trials)} finished trials)\n")
    print("## Test accuracy (mean ± std over seeds; Fig. 1)\n")
    print(markdown(accuracy_table(trials)))
    print("\n## Average ranks of the Fig. 1 criteria (Fig. 3; blocks = growth × density)\n")
    print("| densities | average rank (1 = best) | Friedman | Nemenyi (p = 0.05) |\n| --- | --- | --- | --- |")
    for which in ("all", "D <= 0.2", "D > 0.2"):
        print(ranks(trials, FIG1_CRITERIA, which))
    for d in args.jaccard_density or [0.2]:
        print(f"\n## First-update Jaccard of the prune sets, D = {d} (Fig. 6a)\n")
        print(markdown(first_update_jaccard(trials, d)))
        print(f"\n## Final-mask Jaccard between criteria from the same init, gradient growth, D = {d} (Fig. 6b)\n")
        print(markdown(final_mask_jaccard(trials, d)))
        print(f"\n## ITOP and loss gap, D = {d} (appendix E, Fig. 4)\n")
        print(markdown(itop_and_gap(trials, d)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
