"""The one benchmark table of the measured claims: `python -m benchmarks` (or `make bench`).

    .venv/bin/python -m benchmarks                       # light CPU run (a few minutes on 2 cores)
    .venv/bin/python -m benchmarks --batch 128 --repeats 7 --mask-weights 11000000   # the full sizes
    .venv/bin/python -m benchmarks --only steps,tracking --compile

Every ratio is measured side by side in one run (variants interleaved round-robin, median of
`--repeats`), never against a stored absolute time, and on this process's CPU time (not wall
time: other jobs on a shared machine do not count; BENCH_CLOCK=wall for wall time). Rows:
  steps     training step / dense step (weights trainable in dense), Conv-8 and ResNet-18 on
            32x32: edge-popup (goal <= 1.15), the original full-sort selection (reference),
            soft iEP, multicoat N = 4, its nested top-k's (the selection before
            fast_coat_mask) and its full-sort reference  (benchmarks.training_steps)
  tracking  edge-popup with its history (ever bits + visit counts) / without (goal <= 1.03),
            and the bytes per weight the history holds
  dst       ResNet-56: one topology update in ms, and training with updates every
            Δt = 800 steps / without, amortised (goal <= 1.01)
  masks     bits per weight of mask files (iid masks) against 1.1 H(d) + 0.01; ResNet-50 at
            30% in MB against the paper's 2.87 MB (benchmarks.mask_bits)
  ticket    a ResNet-18 edge-popup ticket: file bytes per weight, bit-exact rebuild
  imp       an IMP round (masked steps + pruning, rewind, optimizer reset; with and without
            J_r) / a dense training of the same steps, ResNet-20 (goal <= 1.02)
            (benchmarks.imp_rounds)
  memory    peak RSS of edge-popup, DST and IMP training / dense at the same batch (fresh
            process each)
  compile   (--compile) torch.compile'd step / eager step, dense and edge-popup, Conv-8
GPU: `--device cuda` runs the training rows on the GPU (wall time after a synchronize) and adds
peak GPU memory to the memory rows. It has not run on a GPU yet.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

Row = tuple[str, str, float | None, str, str]  # name, measure, ratio, goal, met


def _met(ratio: float, goal: float) -> str:
    return "yes" if ratio <= goal else "NO"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def steps_rows(models: list[str], batch: int, repeats: int) -> list[Row]:
    from benchmarks.training_steps import measure

    rows: list[Row] = []
    variants = ["ep", "ep_naive", "ep_notrack", "soft_iep", "multicoat", "multicoat_topk", "multicoat_naive"]
    for model in models:
        med = measure(model, batch, repeats, variants)
        d = med["dense"]
        for name, label, goal in (("ep", "edge-popup", 1.15), ("ep_naive", "edge-popup, full sort (ref.)", None),
                                  ("soft_iep", "soft iEP", 1.15), ("multicoat", "multicoat N=4", 1.15),
                                  ("multicoat_topk", "multicoat N=4, nested top-k's (ref.)", None),
                                  ("multicoat_naive", "multicoat N=4, full sorts (ref.)", None)):
            r = med[name] / d
            rows.append((f"{label} / dense, {model} b{batch}", f"{med[name] * 1e3:.0f} vs {d * 1e3:.0f} ms",
                         r, f"<= {goal}" if goal else "reference", _met(r, goal) if goal else "-"))
        rows.append((f"EP step with history / without, {model} b{batch} (whole steps, noisy)",
                     f"{med['ep'] * 1e3:.0f} vs {med['ep_notrack'] * 1e3:.0f} ms", med["ep"] / med["ep_notrack"],
                     "report", "-"))
    return rows


def tracking_rows(models: list[str], batch: int, repeats: int) -> list[Row]:
    """The history's own time inside each EP step (timed alone), over the EP step without it."""
    from benchmarks.training_steps import build_variant, component_seconds

    rows: list[Row] = []
    for model in models:
        step, hist = component_seconds(build_variant("ep", model, batch), "history", repeats)
        r = step / (step - hist)
        rows.append((f"history on / off (EP), {model} b{batch}", f"{hist * 1e3:.1f} ms of a {step * 1e3:.0f} ms step",
                     r, "<= 1.03", _met(r, 1.03)))
    return rows


def tracking_bytes_rows(model: str) -> list[Row]:
    from benchmarks.training_steps import build_variant

    v = build_variant("ep", model, 2)
    b = v.state.method.history_bytes()
    n = b["weights"]
    return [(f"history bytes / weight (EP, {model})",
             f"ever {b['ever_bits'] / n:.3f} B (1 bit), visits {b['visits'] / n:.0f} B", b["ever_bits"] * 8 / n,
             "ever: 1 bit", "yes" if b["ever_bits"] == sum((t.numel() + 7) // 8 for t in
                                                           v.state.method.ever.values()) else "NO")]


def dst_rows(batch: int, repeats: int, period: int = 800) -> list[Row]:
    from benchmarks.training_steps import build_variant, component_seconds, measure

    med = measure("resnet56", batch, repeats, ["dst"])
    _, update = component_seconds(build_variant("dst_update", "resnet56", batch), "update", repeats)
    amortised = (period * med["dst"] + update) / (period * med["dst"])
    return [
        (f"DST topology update, resnet56 b{batch}", f"{update * 1e3:.0f} ms (a step: {med['dst'] * 1e3:.0f} ms)",
         None, "report", "-"),
        (f"DST with updates / without, Δt={period}, amortised", f"{update * 1e3:.0f} ms per {period} steps",
         amortised, "<= 1.01", _met(amortised, 1.01)),
        (f"DST step / dense, resnet56 b{batch}", f"{med['dst'] * 1e3:.0f} vs {med['dense'] * 1e3:.0f} ms",
         med["dst"] / med["dense"], "report", "-"),
    ]


def imp_rows(batch: int, repeats: int, model: str = "resnet20") -> list[Row]:
    from benchmarks.imp_rounds import measure

    out = measure(model, batch, repeats)
    t, b, s = out["steps"], out["boundary_s"], out["round_steps"]
    return [
        (f"IMP round / dense training, {model} b{batch}", f"step {t['imp'] * 1e3:.0f} vs {t['dense'] * 1e3:.0f} ms, "
         f"boundary {b['imp'] * 1e3:.0f} ms per {s} steps", out["round_ratio"], "<= 1.02",
         _met(out["round_ratio"], 1.02)),
        (f"IMP round with J_r (2 optima) / dense, {model} b{batch}", f"step {t['imp_repel'] * 1e3:.0f} ms, "
         f"boundary {b['imp_repel'] * 1e3:.0f} ms", out["round_ratio_repel"], "<= 1.02",
         _met(out["round_ratio_repel"], 1.02)),
    ]


def mask_rows(weights: int, resnet50: bool) -> list[Row]:
    import numpy as np

    from benchmarks.mask_bits import DENSITIES, entropy, file_bits

    rows: list[Row] = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for d in DENSITIES:
            bits, _, _ = file_bits({"w": torch.from_numpy(rng.random(weights) < d)}, Path(tmp))
            goal = 1.1 * entropy(d) + 0.01
            rows.append((f"mask bits/weight at d={d} ({weights / 1e6:.1f} M iid)",
                         f"{bits:.4f} vs H={entropy(d):.4f}", bits / entropy(d), f"<= {goal:.4f} b",
                         "yes" if bits <= goal else "NO"))
        if resnet50:
            from torchvision.models import resnet50 as build

            shapes = [m.weight.shape for m in build(weights=None).modules()
                      if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
            masks = {f"l{i}": torch.from_numpy(rng.random(math.prod(s)) < 0.3).view(s) for i, s in enumerate(shapes)}
            n = sum(m.numel() for m in masks.values())
            bits, _, _ = file_bits(masks, Path(tmp))
            mb, bound = bits * n / 8e6, entropy(0.3) * n / 8e6
            rows.append(("ResNet-50 mask at 30% (iid), MB", f"{mb:.2f} MB, entropy bound {bound:.2f} MB",
                         mb / 2.87, "well under 2.87 MB", "NO (bound)" if bound > 0.9 * 2.87 else
                         _met(mb, 0.9 * 2.87)))
    return rows


def ticket_rows(model: str) -> list[Row]:
    from trainables.config import ExperimentConfig
    from trainables.loop import build_state
    from trainables.ticket import read_ticket, rebuild_ticket, write_ticket

    cfg = ExperimentConfig.from_flat({"model.name": model, "data.dataset": "cifar10", "data.data_dir": "/x",
                                      "method.name": "edge_popup", "run.seed": 5})
    state = build_state(cfg, torch.device("cpu"), 1)
    masks = state.method.masks(state.model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ticket.parquet"
        write_ticket(path, cfg, masks)
        t0 = time.perf_counter()
        cfg2, masks2 = read_ticket(path)
        rebuilt = rebuild_ticket(cfg2, masks2)
        seconds = time.perf_counter() - t0
        layers = {n: m for n, m in state.model.named_modules() if hasattr(m, "scores")}
        exact = all(torch.equal(rebuilt[f"{n}.weight"], m.weight * masks[f"{n}.weight"]) for n, m in layers.items())
        n = sum(m.numel() for m in masks.values())
        bits = path.stat().st_size * 8 / n
    return [(f"ticket (seed + mask), {model} EP k=0.5", f"{bits:.4f} bits/weight, rebuilt in {seconds:.1f} s",
             None, "bit-exact rebuild", "yes" if exact else "NO")]


def memory_rows(model: str, batch: int, device: str = "cpu") -> list[Row]:
    out: dict[str, dict[str, float]] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                         os.environ.get("PYTHONPATH")]))}
    for variant in ("dense", "ep", "dst", "imp"):
        res = subprocess.run([sys.executable, "-m", "benchmarks.training_steps", "--rss", variant,
                              "--models", model, "--batch", str(batch), "--device", device,
                              "--threads", str(torch.get_num_threads())], capture_output=True, text=True,
                             env=env, check=True)
        out[variant] = json.loads(res.stdout.strip().splitlines()[-1])
    d = out["dense"]
    rows: list[Row] = []
    for variant, label in (("ep", "edge-popup"), ("dst", "DST"), ("imp", "IMP")):
        m = out[variant]
        grown, dense_grown = m["peak_mb"] - m["base_mb"], d["peak_mb"] - d["base_mb"]
        r = grown / dense_grown if grown > 0 and dense_grown > 0 else None  # None: below the import peak
        rows.append((f"peak RSS {label} / dense, {model} b{batch}",
                     f"{m['peak_mb']:.0f} vs {d['peak_mb']:.0f} MB (training: {m['peak_mb'] - m['base_mb']:.0f} "
                     f"vs {d['peak_mb'] - d['base_mb']:.0f})", r, "report", "-"))
        if "gpu_peak_mb" in m:
            rows.append((f"peak GPU memory {label} / dense, {model} b{batch}",
                         f"{m['gpu_peak_mb']:.0f} vs {d['gpu_peak_mb']:.0f} MB", m["gpu_peak_mb"] / d["gpu_peak_mb"],
                         "report", "-"))
    return rows


def compile_rows(batch: int, repeats: int) -> list[Row]:
    from benchmarks.training_steps import build_variant, interleaved_medians

    fns = {"dense": build_variant("dense", "conv8", batch), "ep": build_variant("ep", "conv8", batch),
           "dense_c": build_variant("dense", "conv8", batch, compile_model=True),
           "ep_c": build_variant("ep", "conv8", batch, compile_model=True)}
    med = interleaved_medians(dict(fns.items()), repeats, warmup=2)
    return [(f"torch.compile / eager, {name}, conv8 b{batch}", f"{med[name + '_c'] * 1e3:.0f} vs "
             f"{med[name] * 1e3:.0f} ms", med[name + "_c"] / med[name], "pays if < 1", "-")
            for name in ("dense", "ep")]


def print_table(rows: list[Row]) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"| {'benchmark':<{w0}} | {'measure':<{w1}} | ratio  | goal               | met? |")
    print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|--------|--------------------|------|")
    for name, measure, ratio, goal, met in rows:
        r = f"{ratio:6.3f}" if ratio is not None else "     -"
        print(f"| {name:<{w0}} | {measure:<{w1}} | {r} | {goal:<18} | {met} |")


SECTIONS = ("steps", "tracking", "dst", "imp", "masks", "ticket", "memory")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32, help="training batch (full size: 128; 32 keeps the CPU run short)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per variant (median)")
    p.add_argument("--models", default="conv8,resnet18", help="models of the step rows")
    p.add_argument("--mask-weights", type=int, default=2_000_000, help="weights of the iid masks (full size: 11 M)")
    p.add_argument("--no-resnet50", action="store_true", help="skip the ResNet-50 mask row")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows (slow to compile)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the training rows run "
                   "(cuda: wall time after a synchronize; not yet run on a GPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier ratios on a shared "
                   "machine, where a 2-thread op waits for its slower thread)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from benchmarks.training_steps import use_device

    use_device(args.device)
    only = set(args.only.split(","))
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU {cpu_name()}"
    print(f"# sparsesweep benchmarks: {where}, {os.cpu_count()} cores visible, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; batch {args.batch}, "
          f"median of {args.repeats} interleaved repetitions of CPU time", flush=True)
    rows: list[Row] = []
    t0 = time.perf_counter()
    models = args.models.split(",")
    if "steps" in only:
        rows += steps_rows(models, args.batch, args.repeats)
    if "tracking" in only:
        rows += tracking_rows(models, args.batch, args.repeats)
        rows += tracking_bytes_rows(models[-1])
    if "dst" in only:
        rows += dst_rows(args.batch, args.repeats)
    if "imp" in only:
        rows += imp_rows(args.batch, args.repeats)
    if "masks" in only:
        rows += mask_rows(args.mask_weights, not args.no_resnet50)
    if "ticket" in only:
        rows += ticket_rows(models[-1])
    if "memory" in only:
        rows += memory_rows(models[-1], args.batch, args.device)
    if args.compile:
        rows += compile_rows(args.batch, args.repeats)
    print_table(rows)
    print(f"# {time.perf_counter() - t0:.0f} s" + ("" if args.device == "cuda" else
          "; GPU figures: not measured (run with --device cuda on a GPU)"), flush=True)


if __name__ == "__main__":
    main()
