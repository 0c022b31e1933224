"""The sweep driver's peak memory at 100 and at 1000 trials of a trainable that returns at once.

    .venv/bin/python -m benchmarks.driver_memory [--sizes 100,1000]

Each size runs in a fresh process: the whole CLI path (`orchestrator.driver.run`: local Ray,
Tune, the MLflow SQLite callback writing a child run per trial, the results tables and
Parquet) over a grid of N seeds, with a trainable that reports one epoch and returns. The
driver's peak RSS (ru_maxrss) must not grow with N: the driver keeps no per-trial state
beyond what Tune itself keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any


def instant(config: dict[str, Any], **_: Any) -> None:
    """One report, then return: what is left to measure is the machinery."""
    import ray.tune

    ray.tune.report({"epoch": 1, "cycle": 1, "test_acc": 0.5, "test_loss": 1.0, "train_acc": 0.5,
                     "train_loss": 1.0})


def child(trials: int, cores: int) -> None:
    from orchestrator.driver import run
    from orchestrator.sweep import build_parser, build_plan, settings_from_args

    with tempfile.TemporaryDirectory(prefix="driver-mem-") as tmp:
        args = build_parser().parse_args([
            "--space", "ep_quick", "--storage", tmp, "--name", "mem", "--num-samples", str(trials),
            "--grid", "method.prune_rate=0.5", "--max-concurrent", str(cores),
            "--cpus-per-worker", "0.5", "--set", "schedule.epochs=1"])
        settings = settings_from_args(args)
        plan = build_plan(settings)
        t0 = time.perf_counter()
        code = run(settings, plan, resume=False, num_cpus=cores, address=None, trial_fn=instant)
        wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"trials": trials, "code": code, "wall_s": wall, "peak_rss_mb": peak_mb}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,1000")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.cores)
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.driver_memory", "--child", str(n),
                               "--cores", str(args.cores)], capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{n} trials failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        rows.append(json.loads(line.removeprefix("RESULT ")))
    print(f"\n{'trials':>7} {'exit':>5} {'wall s':>8} {'trials/s':>9} {'driver peak RSS MB':>19}")
    for r in rows:
        print(f"{r['trials']:>7} {r['code']:>5} {r['wall_s']:>8.1f} {r['trials'] / r['wall_s']:>9.1f} "
              f"{r['peak_rss_mb']:>19.0f}")
    if len(rows) > 1:
        print(f"peak RSS ratio {rows[-1]['trials']} / {rows[0]['trials']} trials: "
              f"{rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
