"""Measure seconds per training step of every zoo model: the cost table behind `--dry-run`.

    .venv/bin/python -m benchmarks.step_costs                      # CPU, every model
    .venv/bin/python -m benchmarks.step_costs --device cuda --write   # on a GPU: fill the GPU column

Each model trains edge-popup (the strong-lottery default) on synthetic uint8 images of its
reference input (32x32x3; 224x224x3 for torchvision's ImageNet models), through the real
engine (`trainables.loop.train_epoch`): a warm-up epoch of one step, then an epoch of 1 + `--steps`
steps less an epoch of 1 step (so per-epoch work is not counted as step time). The
figure is kept with its batch and FLOPs/sample, and `orchestrator.cluster.packing` scales it linearly
to another batch size or input shape. `--write` rewrites orchestrator/cluster/step_costs.py with the
new figures for that device and keeps the other device's.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from orchestrator.cluster.packing import profile
from trainables.config import MODELS, ExperimentConfig
from trainables.data import DataBundle
from trainables.loop import DistContext, build_state, train_epoch
from trainables.methods.base import Position

TABLE = Path(__file__).resolve().parents[1] / "orchestrator" / "step_costs.py"


def reference_config(model: str, batch: int, steps: int) -> ExperimentConfig:
    big = MODELS[model].torchvision
    return ExperimentConfig.from_flat({
        "model.name": model, "data.dataset": "cifar10", "data.data_dir": "/synthetic",
        "data.resize": 224 if big else 0, "data.batch_size": batch, "data.augment": False,
        "method.name": "edge_popup", "run.max_steps_per_epoch": steps, "run.deterministic": False})


def synthetic(cfg: ExperimentConfig, n: int, device: torch.device) -> DataBundle:
    side = cfg.data.resize or 32
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataBundle(dataset="cifar10", train_x=x, train_y=y, test_x=x[:1], test_y=y[:1],
                      num_classes=10, channels=3, image_size=side,
                      mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25)).to(device)


def _epoch_seconds(state, data: DataBundle, cfg: ExperimentConfig, device: torch.device) -> float:  # noqa: ANN001
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_epoch(state, data, cfg, DistContext(), device, state.model)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def seconds_per_step(model: str, batch: int, steps: int, device: torch.device) -> float:
    """(t(1 + steps) - t(1)) / steps: the difference of two epochs cancels what an epoch costs
    besides its steps (batch order, end-of-epoch tracking), which 2 timed steps once counted
    as step time (the MLP's figure was 4x too high)."""
    cfg = reference_config(model, batch, steps + 1)
    data = synthetic(cfg, batch * (steps + 2), device)
    state = build_state(cfg, device, steps + 1)
    state.method.on_train_start(state.model, Position(step=0, epoch=0, cycle=1, steps_per_epoch=steps + 1))
    one = reference_config(model, batch, 1)
    train_epoch(state, data, one, DistContext(), device, state.model)  # allocations, lazy inits
    short = min(_epoch_seconds(state, data, one, device) for _ in range(2))
    long = _epoch_seconds(state, data, cfg, device)
    return max(long - short, 0.0) / steps


def write_table(costs: dict[str, dict], header: str) -> None:
    TABLE.write_text(
        '"""Seconds per training step, measured by benchmarks/step_costs.py (do not edit by hand).\n\n'
        f"{header}\n"
        '"""\n\n'
        "STEP_COSTS: dict[str, dict[str, dict[str, float]]] = "
        + json.dumps(costs, indent=4, sort_keys=True) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    p.add_argument("--batch", type=int, default=0, help="batch (default: 32 at 32px, 4 at 224px on "
                   "CPU; 128 and 64 on a GPU)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per model (beyond a 1-step epoch)")
    p.add_argument("--write", action="store_true", help="store the figures in orchestrator/cluster/step_costs.py")
    args = p.parse_args()
    device = torch.device(args.device)
    results: dict[str, dict[str, float]] = {}
    print(f"{'model':<18} {'batch':>5} {'s/step':>9} {'ms/sample':>10}  ({device}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()})")
    for model in args.models.split(","):
        big = model in MODELS and MODELS[model].torchvision
        batch = args.batch or {("cpu", False): 32, ("cpu", True): 4, ("cuda", False): 128,
                               ("cuda", True): 64}[(device.type, big)]
        s = seconds_per_step(model, batch, args.steps, device)
        flops = profile(reference_config(model, batch, 1)).flops_per_sample
        results[model] = {"batch": batch, "seconds": round(s, 6), "flops_per_sample": flops}
        print(f"{model:<18} {batch:>5} {s:>9.4f} {1000 * s / batch:>10.2f}", flush=True)
    if args.write:
        from orchestrator.cluster.step_costs import STEP_COSTS

        costs = {k: dict(v) for k, v in STEP_COSTS.items()}
        costs.setdefault(device.type, {}).update(results)
        name = torch.cuda.get_device_name() if device.type == "cuda" else (
            platform.processor() or platform.machine())
        write_table(costs, f"Last written for {device.type} ({name}, {torch.get_num_threads()} threads,"
                           f" edge-popup, torch {torch.__version__}).")
        print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
