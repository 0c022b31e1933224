"""What a sparse network buys at inference, and what N:M costs in training.

    .venv/bin/python -m benchmarks.nm_inference [--models mlp,conv8,resnet18] [--seconds 6]

infer rows: the seeds' models (MLP 784-300-100 on 28x28, Conv-8 and ResNet-18 on 32x32),
every conv/linear weight masked at random to a density d (one uniform mask per layer), folded
into plain torch layers (`trainables.export.fold` layout) and timed by
`trainables.export.latency.measure_latency` as a trial does: CSR or dense chosen per layer by
measurement, median of interleaved repeats, batch 64, this process's thread count. The
ratio is dense / chosen (>= 1 up to noise: a layer that loses stays dense).

nm rows: a training step with a 2:4 pattern over the same method unstructured at the same
density 0.5 (goal <= 1.10 on CPU), edge-popup, multicoat N=4 and DST (a plain step and a step
with a topology update), through `benchmarks.training_steps`' real states; and the bits per
weight of a 2:4 mask file against log2(C(4,2))/4 = 0.646 + 1%.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch
from torch import nn

from benchmarks.table import Row, print_table

INFER_DENSITIES = (0.5, 0.2, 0.1, 0.05, 0.01)
INFER_BATCH = 64


def _plain_model(model: str) -> tuple[nn.Module, tuple[int, int, int]]:
    from trainables.config import ExperimentConfig
    from trainables.models import DENSE, build_model

    if model == "mlp":
        cfg = ExperimentConfig.from_flat({"model.name": "mlp", "data.dataset": "mnist", "data.data_dir": "/synthetic",
                                          "method.name": "dense"})
        shape = (1, 28, 28)
    else:
        cfg = ExperimentConfig.from_flat({"model.name": model, "data.dataset": "cifar10",
                                          "data.data_dir": "/synthetic", "method.name": "dense"})
        shape = (3, 32, 32)
    torch.manual_seed(0)
    return build_model(cfg, DENSE).eval(), shape


def infer_rows(models: list[str], seconds: float, densities: tuple[float, ...] = INFER_DENSITIES) -> list[Row]:
    from trainables.export.latency import measure_latency

    rows: list[Row] = []
    for model in models:
        for d in densities:
            plain, shape = _plain_model(model)
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for m in plain.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        m.weight.mul_(torch.rand(m.weight.shape, generator=g) < d)
            x = torch.randn(INFER_BATCH, *shape, generator=g)
            lat = measure_latency(plain, x, seconds=seconds)
            csr = sum(c == "csr" for c in lat.choices.values())
            rows.append((f"CSR inference / dense, {model} at density {d} (b{INFER_BATCH})",
                         f"{lat.infer_ms:.2f} vs {lat.infer_ms_dense:.2f} ms, {csr}/{len(lat.choices)} layers CSR",
                         lat.infer_ms / lat.infer_ms_dense, "<= 1 (never slower)",
                         "yes" if lat.infer_ms <= lat.infer_ms_dense else "NO"))
    return rows


def nm_step_rows(models: list[str], batch: int, repeats: int) -> list[Row]:
    from benchmarks.training_steps import measure

    rows: list[Row] = []
    pairs = (("ep_nm", "ep", "edge-popup"), ("multicoat_nm", "multicoat", "multicoat N=4"),
             ("dst_nm", "dst_u50", "DST step"), ("dst_update_nm", "dst_update_u50", "DST update step"))
    for model in models:
        med = measure(model, batch, repeats, [v for pair in pairs for v in pair[:2]])
        for nm, base, label in pairs:
            r = med[nm] / med[base]
            goal = 1.10
            rows.append((f"{label} 2:4 / unstructured (d=0.5), {model} b{batch}",
                         f"{med[nm] * 1e3:.0f} vs {med[base] * 1e3:.0f} ms", r, f"<= {goal}", "yes" if r <= goal else "NO"))
    return rows


def nm_mask_rows(weights: int = 11_000_000) -> list[Row]:
    """Whole files (Parquet's ~2 KB of schema and footer included: +1.3% at 2 M weights, so the
    rows use the issue's 11 M unless asked otherwise), and the coded payload alone."""
    from trainables.sparse.mask_io import masks_table, write_masks
    from trainables.sparse.nm import nm_topk

    rows: list[Row] = []
    g = torch.Generator().manual_seed(0)
    for n, m in ((2, 4), (1, 4), (4, 8)):
        mask = nm_topk(torch.rand(weights // 1024, 1024, generator=g), n, m)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.parquet"
            write_masks(path, {"w": mask})
            bits = path.stat().st_size * 8 / mask.numel()
        payload = len(masks_table({"w": mask}).column("payload")[0].as_py()) * 8 / mask.numel()
        h = math.log2(math.comb(m, n)) / m
        goal = h * 1.01
        rows.append((f"{n}:{m} mask file bits/weight ({mask.numel() / 1e6:.1f} M)",
                     f"{bits:.4f} (payload {payload:.4f}) vs H={h:.4f}",
                     bits / h, f"<= {goal:.4f} b", "yes" if bits <= goal else "NO"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,conv8,resnet18")
    p.add_argument("--seconds", type=float, default=6.0, help="latency budget per model and density")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    print_table(infer_rows(args.models.split(","), args.seconds) + nm_mask_rows())


if __name__ == "__main__":
    main()
