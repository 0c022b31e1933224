"""2:4 semi-structured inference on a GPU against dense, layer and model (fp16 / bf16).

    .venv/bin/python -m benchmarks.gpu_nm [--dtype float16] [--batch 256]

Needs a CUDA GPU of compute capability >= 8.0 (says so and exits 0 otherwise). Rows:
  linear  a 2:4-masked nn.Linear (sizes of the seeds' MLP scaled to multiples of 64, and
          4096x4096) as `to_sparse_semi_structured` against the same layer dense, median of
          CUDA-event timings after warm-up;
  model   an MLP 1024-1024-1024 with every hidden layer 2:4 (a trial's export folded from
          sparsity.pattern=2:4 has this layout), through `trainables.export.semi_structured.
          gpu_latency`, which a GPU trial uses for infer_ms / infer_ms_dense / infer_speedup.
Not run yet: this repository's sessions had no GPU; record the figures when one runs it.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn


def _two_four(layer: nn.Linear) -> nn.Linear:
    from trainables.sparse.nm import nm_topk

    with torch.no_grad():
        layer.weight.mul_(nm_topk(layer.weight.abs(), 2, 4))
    return layer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"))
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks.gpu_nm: no CUDA GPU here; nothing measured")
        return 0
    cap = torch.cuda.get_device_capability()
    if cap < (8, 0):
        print(f"benchmarks.gpu_nm: compute capability {cap[0]}.{cap[1]} < 8.0 has no sparse tensor cores")
        return 0
    from trainables.export.semi_structured import gpu_latency

    dtype = getattr(torch, args.dtype)
    print(f"# {torch.cuda.get_device_name()} (sm {cap[0]}{cap[1]}), torch {torch.__version__}, {args.dtype}, "
          f"batch {args.batch}")
    print(f"{'row':48s} {'dense ms':>9s} {'2:4 ms':>9s} {'speed-up':>9s}")
    for out_f, in_f in ((320, 832), (128, 320), (1024, 1024), (4096, 4096)):
        layer = _two_four(nn.Linear(in_f, out_f))
        found = gpu_latency(nn.Sequential(layer), torch.randn(args.batch, in_f), dtype=dtype)
        print(f"{f'linear {out_f}x{in_f}':48s} {found['infer_ms_dense']:9.4f} {found['infer_ms']:9.4f} "
              f"{found['infer_speedup']:9.2f}")
    mlp = nn.Sequential(nn.Flatten(), _two_four(nn.Linear(1024, 1024)), nn.ReLU(), _two_four(nn.Linear(1024, 1024)),
                        nn.ReLU(), _two_four(nn.Linear(1024, 1024)), nn.ReLU(), nn.Linear(1024, 64))
    found = gpu_latency(mlp, torch.randn(args.batch, 1024), dtype=dtype)
    print(f"{'MLP 1024-1024-1024, hidden layers 2:4':48s} {found['infer_ms_dense']:9.4f} {found['infer_ms']:9.4f} "
          f"{found['infer_speedup']:9.2f}")
    print("# layer choices:", found["choices"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
