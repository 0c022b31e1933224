"""The driver's start-up phase: what checking the cluster before creating MLflow's store costs.

    .venv/bin/python -m benchmarks.startup_order [--repeats 3]

`orchestrator.driver._start` starts Ray while a thread imports the tracking side (the
trainable's torch stack, MLflow) and prepares the runs' labels; MLflow's store is created only
after the cluster was checked to fit a trial ("checked"). The alternative creates the store in
that thread too, overlapping it with Ray's start ("overlapped"), but leaves a store behind when
the cluster refuses the sweep. Each run is a fresh process (imports are part of the cost),
from its start to the end of `_start`, on the same one-trial plan; the two alternate.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_start(order: str, storage: str) -> float:
    """Seconds from this process's start to a ready tracker and cluster (then Ray stops)."""
    began = time.monotonic()
    import ray

    from orchestrator import driver
    from orchestrator.cluster.resources import check_resources, connect
    from orchestrator.settings import Settings, default_tracking_uri
    from search_spaces import get_space, make_plan

    plan = make_plan(get_space("dense_quick"), search="grid", sets={"model.name": "mlp"}, grid_overrides={},
                     num_samples=1)
    settings = Settings(space="dense_quick", name="bench", storage=storage, experiment="bench",
                        tracking_uri=default_tracking_uri(storage))
    layout = settings.layout
    if order == "checked":
        driver._start(settings, plan, layout, num_cpus=1, address=None)
    else:
        def prepare_and_open() -> None:
            from orchestrator.tracking.tracker import SweepTracker

            driver._prepare_tracking(settings, plan)
            SweepTracker(settings.tracking_uri, settings.experiment, Path(storage), layout.spool_dir)

        with ThreadPoolExecutor(1) as pool:
            opened = pool.submit(prepare_and_open)
            connect(None, 1)
            check_resources(settings, plan, ray.cluster_resources(), remote=False)
            opened.result()
    elapsed = time.monotonic() - began
    ray.shutdown()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=("checked", "overlapped"), help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(f"SECONDS {one_start(args.one, args.storage):.3f}")
        return
    times: dict[str, list[float]] = {"checked": [], "overlapped": []}
    for _ in range(args.repeats):
        for order in times:
            with tempfile.TemporaryDirectory() as tmp:
                proc = subprocess.run([sys.executable, "-m", "benchmarks.startup_order", "--one", order,
                                       "--storage", tmp], cwd=ROOT, capture_output=True, text=True, timeout=600)
                line = next(x for x in proc.stdout.splitlines() if x.startswith("SECONDS "))
                times[order].append(float(line.split()[1]))
    for order, values in times.items():
        print(f"{order:>10}: median {statistics.median(values):.2f} s  runs {', '.join(f'{v:.2f}' for v in values)}")
    ratio = statistics.median(times["checked"]) / statistics.median(times["overlapped"])
    print(f"checked / overlapped: {ratio:.2f}")


if __name__ == "__main__":
    main()
