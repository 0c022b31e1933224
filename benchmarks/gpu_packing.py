"""Trials per hour on one GPU, packed (`--gpus-per-worker auto`) against unpacked (1 per trial).

    .venv/bin/python -m benchmarks.gpu_packing [--model resnet20] [--trials 16] [--epochs 3]

Needs a CUDA GPU (says so and exits otherwise). Both runs go through the real CLI path
(`orchestrator.driver.run`: local Ray with the machine's GPUs, Tune, MLflow SQLite) on the same
grid: `--trials` seeds of one model on digits resized to 32 px (bundled, no download), batch
128. Unpacked, one trial holds the GPU at a time; packed, the model's auto share lets
1/share trials run at once (Ray's fractional GPUs). Reported side by side: wall time,
trials per hour, the share, and the mean time a trial trained (Tune's time_total_s), which
shows how much the packed trials slow each other down.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from orchestrator.cluster.packing import gpu_share
from orchestrator.driver import run
from orchestrator.sweep import build_parser, build_plan, settings_from_args


def sweep(model: str, trials: int, epochs: int, gpus: str, concurrent: int, cpus: float,
          device: str = "cuda") -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gpu-packing-") as tmp:
        args = build_parser().parse_args([
            "--space", "ep_quick", "--storage", tmp, "--name", "pack", "--num-samples", str(trials), "--grid", "method.prune_rate=0.5",
            "--max-concurrent", str(concurrent), "--gpus-per-worker", gpus, "--cpus-per-worker", str(cpus),
            "--set", f"model.name={model}", "--set", "data.resize=32", "--set", "data.batch_size=128",
            "--set", f"schedule.epochs={epochs}", "--set", f"run.device={device}"])
        settings = settings_from_args(args)
        plan = build_plan(settings)
        t0 = time.perf_counter()
        code = run(settings, plan, resume=False, num_cpus=os.cpu_count(), address=None)
        wall = time.perf_counter() - t0
        assert code == 0, f"sweep failed ({code})"
        table = pd.read_parquet(Path(tmp) / "tune" / "pack" / "results.parquet")
    return {"wall_s": wall, "trials_per_hour": trials * 3600 / wall,
            "trial_s": float(table["time_total_s"].mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--cpu-smoke", action="store_true",
                   help="check the script on a machine without a GPU (both runs train on CPU; no figures)")
    args = p.parse_args()
    device = "cpu" if args.cpu_smoke else "cuda"
    if not args.cpu_smoke and not torch.cuda.is_available():  # `make bench` on a CPU machine
        print("skipped: benchmarks/gpu_packing.py needs a CUDA GPU and none is visible "
              "(--cpu-smoke checks the script without one)")
        return
    plan = build_plan(settings_from_args(build_parser().parse_args(
        ["--space", "ep_quick", "--dry-run", "--set", f"model.name={args.model}", "--set", "data.resize=32",
         "--set", "data.batch_size=128"])))
    share = gpu_share(plan.trial_configs()[0])
    per_gpu = round(1 / share)
    cpus = max(0.5, (os.cpu_count() or 2) / per_gpu - 0.5)
    unpacked = "0" if args.cpu_smoke else "1"
    rows = {"unpacked (--gpus-per-worker 1)": sweep(args.model, args.trials, args.epochs, unpacked, 1, cpus,
                                                    device),
            f"packed (auto: {per_gpu} per GPU)": sweep(args.model, args.trials, args.epochs, "auto",
                                                        per_gpu, cpus, device)}
    where = "CPU (smoke test, not a measurement)" if args.cpu_smoke else torch.cuda.get_device_name()
    print(f"\n{args.model}, {args.trials} trials x {args.epochs} epochs of digits at 32 px, batch 128, "
          f"on {where}")
    print(f"{'':<32} {'wall s':>8} {'trials/hour':>12} {'s per trial':>12}")
    for name, r in rows.items():
        print(f"{name:<32} {r['wall_s']:>8.1f} {r['trials_per_hour']:>12.0f} {r['trial_s']:>12.1f}")
    a, b = rows.values()
    print(f"packed / unpacked trials per hour: {b['trials_per_hour'] / a['trials_per_hour']:.2f}")


if __name__ == "__main__":
    main()
