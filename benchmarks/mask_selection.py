"""Time mask selection on CPU: full sort vs kthvalue vs topk vs `topk_mask`, and the cache.

    .venv/bin/python -m benchmarks.mask_selection --repeats 10

Part 1 selects the top 1 - k of |scores| for a 512x512x3x3 layer (2.36 M scores, ResNet18's
widest conv) and a small 64x3x3x3 one (1.7 K, its stem) with each method:
  sort      hidden-networks' GetSubnet: full sort, then scatter 0 / 1 by index
  kthvalue  k-th smallest |s| and a `> threshold` test (fast, but ties change the count)
  topk      torch.topk of the `keep` largest, then scatter (always the large side)
  topk_mask ours: topk over the smaller side, exact count
Part 2 times forward + backward of a SupermaskConv2d when the cached mask is reused (the
normal case between optimizer steps), when it is recomputed by `topk_mask` in every forward,
and when hidden-networks' sort runs in every forward.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

from trainables.sparse.density import kept_count
from trainables.sparse.selection import topk_mask
from trainables.sparse.supermask import StraightThrough, SupermaskConv2d


def sort_mask(scores: torch.Tensor, prune_rate: float) -> torch.Tensor:
    """hidden-networks GetSubnet.forward (with k = fraction pruned)."""
    out = scores.abs().clone()
    _, idx = out.flatten().sort()
    j = scores.numel() - kept_count(scores.numel(), prune_rate)
    flat = out.flatten()
    flat[idx[:j]] = 0
    flat[idx[j:]] = 1
    return out


def kthvalue_mask(scores: torch.Tensor, prune_rate: float) -> torch.Tensor:
    flat = scores.abs().flatten()
    j = scores.numel() - kept_count(scores.numel(), prune_rate)
    threshold = flat.kthvalue(j).values if j > 0 else flat.min() - 1
    return (scores.abs() > threshold).float()


def topk_large_mask(scores: torch.Tensor, prune_rate: float) -> torch.Tensor:
    flat = scores.abs().flatten()
    keep = kept_count(scores.numel(), prune_rate)
    idx = torch.topk(flat, keep, sorted=False).indices
    mask = torch.zeros_like(flat)
    mask[idx] = 1
    return mask.view_as(scores)


def ours(scores: torch.Tensor, prune_rate: float) -> torch.Tensor:
    return topk_mask(scores, kept_count(scores.numel(), prune_rate)).float()


METHODS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "sort": sort_mask,
    "kthvalue": kthvalue_mask,
    "topk": topk_large_mask,
    "topk_mask": ours,
}


def median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each function; calls are interleaved round-robin after one warm-up each,
    so a change of machine load hits every column alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def selection_table(repeats: int, rates: list[float]) -> None:
    shapes = {"512x512x3x3": (512, 512, 3, 3), "64x3x3x3": (64, 3, 3, 3)}
    print(f"{'layer':>12} {'n':>9} {'k':>5} " + " ".join(f"{m + ' ms':>12} {'x sort':>7}" for m in METHODS))
    for label, shape in shapes.items():
        scores = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        for k in rates:
            ms = median_ms({name: partial(f, scores, k) for name, f in METHODS.items()}, repeats)
            cells = " ".join(f"{ms[m]:>12.3f} {ms['sort'] / ms[m]:>6.1f}x" for m in METHODS)
            print(f"{label:>12} {scores.numel():>9} {k:>5} {cells}")


def cache_table(repeats: int, batch: int, side: int) -> None:
    torch.manual_seed(0)
    layer = SupermaskConv2d(512, 512, 3, padding=1, prune_rate=0.5)
    x = torch.randn(batch, 512, side, side)

    def step_cached() -> None:
        layer.scores.grad = None
        layer(x).sum().backward()

    def step_recompute() -> None:
        layer.invalidate_mask()
        step_cached()

    def step_sort() -> None:
        layer.scores.grad = None
        m = sort_mask(layer.scores.detach(), layer.prune_rate)
        w = layer.weight * StraightThrough.apply(layer.scores.abs(), m)
        layer._conv_forward(x, w, None).sum().backward()

    rows = {"cached mask": step_cached, "topk_mask every forward": step_recompute,
            "sort every forward (hidden-networks)": step_sort}
    print(f"\nSupermaskConv2d 512->512 3x3, k=0.5, input {batch}x512x{side}x{side}: forward + backward")
    ms = median_ms(rows, repeats)
    for label in rows:
        print(f"{label:>38} {ms[label]:>9.2f} ms {ms[label] / ms['cached mask']:>6.2f}x cached")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per cell (median)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.5, 0.9],
                        help="prune rates k to time")
    parser.add_argument("--batch", type=int, default=32, help="batch of the forward/backward")
    parser.add_argument("--side", type=int, default=4, help="spatial side of the input (CIFAR ResNet18 layer4: 4)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, median of {args.repeats}")
    selection_table(args.repeats, args.rates)
    cache_table(args.repeats, args.batch, args.side)


if __name__ == "__main__":
    main()
