"""What the sweep machinery costs: 16 tiny one-worker trials at concurrency = cores.

    .venv/bin/python -m benchmarks.orchestration_overhead [--trials 16] [--epochs 2]

Each trial is the real trainable (Conv-4 edge-popup on digits, a few steps per epoch) run by
the real CLI path (`orchestrator.driver.run`: local Ray, Tune, the MLflow SQLite callback,
the results tables). A trial's own time is Tune's `time_total_s` (from the trainable's start
to its last report: data, model, training, evaluation, checkpoints). Reported:
- wall / sum of the trials' own time (the overhead ratio), and wall / ideal, where ideal =
  sum / concurrency;
- the fixed cost: wall minus the span from the first trial's start to the last one's end
  (Ray's start-up, MLflow's new database, the first trial process importing torch, the
  results tables and figures);
- the steady state: span / ideal, and the overhead per trial, (span - ideal) * concurrency /
  trials (scheduling, MLflow logging, checkpoint persistence).
Two runs side by side: with Tune's actor reuse (what the sweep does) and without (a new
process per trial).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from orchestrator.driver import run
from orchestrator.sweep import build_parser, build_plan, settings_from_args


def one_sweep(trials: int, epochs: int, steps: int, reuse: bool, cores: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        args = build_parser().parse_args([
            "--space", "ep_quick", "--storage", tmp, "--name", "overhead", "--num-samples", str(trials),
            "--grid", "method.prune_rate=0.5", "--max-concurrent", str(cores),
            "--set", f"schedule.epochs={epochs}", "--set", f"run.max_steps_per_epoch={steps}",
            "--set", "data.batch_size=32"])
        settings = settings_from_args(args)
        settings.reuse_actors = reuse
        plan = build_plan(settings)
        t0 = time.perf_counter()
        code = run(settings, plan, resume=False, num_cpus=cores, address=None)
        wall = time.perf_counter() - t0
        assert code == 0, f"sweep failed ({code})"
        sweep_dir = Path(tmp) / "tune" / "overhead"
        table = pd.read_parquet(sweep_dir / "results.parquet")
        starts, ends = [], []
        for result in sweep_dir.glob("trial_*/result.json"):
            rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
            starts.append(rows[0]["timestamp"] - rows[0]["time_this_iter_s"])
            ends.append(rows[-1]["timestamp"])
    own = float(table["time_total_s"].sum())
    ideal = own / cores
    span = max(ends) - min(starts)  # Tune's timestamps have 1 s resolution
    return {"wall_s": wall, "trials_s": own, "ideal_s": ideal, "wall_over_sum": wall / own,
            "ratio": wall / ideal, "fixed_s": wall - span, "steady": span / ideal,
            "overhead_per_trial_s": (span - ideal) * cores / trials}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per epoch")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    rows = {}
    for reuse in (True, False):
        rows["actor reuse (default)" if reuse else "new process per trial"] = one_sweep(
            args.trials, args.epochs, args.steps, reuse, args.cores)
    print(f"\n{args.trials} trials, concurrency {args.cores} (= cores), {args.epochs} epochs x "
          f"{args.steps} steps each")
    print(f"{'':<24} {'wall s':>7} {'sum s':>6} {'wall/sum':>9} {'ideal s':>8} {'wall/ideal':>11} "
          f"{'fixed s':>8} {'steady':>7} {'overhead/trial s':>17}")
    for name, r in rows.items():
        print(f"{name:<24} {r['wall_s']:>7.1f} {r['trials_s']:>6.1f} {r['wall_over_sum']:>9.2f} "
              f"{r['ideal_s']:>8.1f} {r['ratio']:>11.2f} {r['fixed_s']:>8.1f} {r['steady']:>7.2f} "
              f"{r['overhead_per_trial_s']:>17.2f}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
