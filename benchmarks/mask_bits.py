"""Mask artifacts against the entropy bound: bits per weight of `write_masks` at each density.

    .venv/bin/python -m benchmarks.mask_bits [--weights 11000000]

For iid masks of `--weights` weights at densities 0.5, 0.3, 0.2, 0.05 and 0.01, the size of
the whole file `write_masks` writes (footer included) in bits per weight, next to the entropy
H(d) = -d log2 d - (1-d) log2(1-d) and the goal 1.1 H(d) + 0.01; every file is read back and
compared. Then ResNet-50 (torchvision's layers, 25.5 M conv/linear weights) with an iid mask
at 30% density per layer, against the 2.87 MB the strong-lottery paper quotes at 1 bit/weight.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainables.sparse.mask_io import read_masks, write_masks

DENSITIES = (0.5, 0.3, 0.2, 0.05, 0.01)


def entropy(d: float) -> float:
    return -d * math.log2(d) - (1 - d) * math.log2(1 - d)


def file_bits(masks: dict[str, torch.Tensor], folder: Path) -> tuple[float, float, float]:
    """(bits per weight of the file, write seconds, read seconds), checking the round trip."""
    path = folder / "m.parquet"
    t0 = time.perf_counter()
    write_masks(path, masks)
    t1 = time.perf_counter()
    back = read_masks(path)
    t2 = time.perf_counter()
    assert all(torch.equal(back[k], masks[k]) for k in masks), "round trip changed a mask"
    return path.stat().st_size * 8 / sum(m.numel() for m in masks.values()), t1 - t0, t2 - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=int, default=11_000_000, help="weights of the iid masks")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"iid masks of {args.weights:,} weights (one layer):")
    print(f"{'density':>8} {'H(d)':>7} {'goal':>7} {'file':>7} {'file/H':>7} {'write s':>8} {'read s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for d in DENSITIES:
            mask = torch.from_numpy(rng.random(args.weights) < d)
            bits, tw, tr = file_bits({"w": mask}, Path(tmp))
            h = entropy(d)
            flag = "ok" if bits <= 1.1 * h + 0.01 else "MISSES"
            print(f"{d:>8} {h:>7.4f} {1.1 * h + 0.01:>7.4f} {bits:>7.4f} {bits / h:>7.3f} {tw:>8.2f} {tr:>7.2f}  {flag}")
        from torchvision.models import resnet50

        model = resnet50(weights=None)
        shapes = {f"{n}.weight": m.weight.shape for n, m in model.named_modules()
                  if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
        masks = {n: torch.from_numpy(rng.random(int(np.prod(s))) < 0.3).view(s) for n, s in shapes.items()}
        n = sum(m.numel() for m in masks.values())
        bits, _, _ = file_bits(masks, Path(tmp))
        print(f"\nResNet-50, {n:,} conv/linear weights, iid masks at density 0.3: {bits * n / 8 / 1e6:.2f} MB "
              f"({bits:.4f} bits/weight; entropy bound {entropy(0.3) * n / 8 / 1e6:.2f} MB; "
              f"paper, 1 bit/weight: 2.87 MB)")


if __name__ == "__main__":
    main()
