"""GPU inference with 2:4 semi-structured weights (`torch.sparse.to_sparse_semi_structured`).

cuSPARSELt (or CUTLASS) multiplies a 2:4 weight at half the dense work: fp16/bf16, compute
capability >= 8.0, both matrix dimensions multiples of 64 (DESIGN.md: int8 needs 128). A
linear layer whose folded weight is 2:4 along its input dimension (at most 2 non-zeros in
every 4 consecutive weights: the layout N:M masks with N <= 2, M = 4 produce) runs
semi-structured; everything else stays dense. The eligibility rules are plain functions,
tested on CPU; the conversion and the timing need a GPU (benchmarks/gpu_nm.py).
"""

from __future__ import annotations

import copy
import statistics

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SEMI_DTYPES", "SemiStructuredLinear", "gpu_latency", "is_two_four", "semi_structured_problem"]

SEMI_DTYPES = (torch.float16, torch.bfloat16)
MIN_CAPABILITY = (8, 0)
DIM_MULTIPLE = 64


def is_two_four(weight: Tensor) -> bool:
    """At most 2 non-zeros in every 4 consecutive weights of each row of W.view(out, -1)."""
    w = weight.detach().reshape(weight.shape[0], -1)
    if w.shape[1] % 4:
        return False
    return bool(((w != 0).reshape(-1, 4).sum(1) <= 2).all())


def semi_structured_problem(layer: nn.Module, capability: tuple[int, int] | None,
                            dtype: torch.dtype) -> str | None:
    """Why `layer` cannot run 2:4 semi-structured on a device of `capability` (None: it can)."""
    if capability is None:
        return "no CUDA device"
    if capability < MIN_CAPABILITY:
        return f"compute capability {capability[0]}.{capability[1]} < 8.0"
    if dtype not in SEMI_DTYPES:
        return f"dtype {dtype} (needs float16 or bfloat16)"
    if not isinstance(layer, nn.Linear):
        return "not a linear layer"
    out_f, in_f = layer.weight.shape
    if out_f % DIM_MULTIPLE or in_f % DIM_MULTIPLE:
        return f"shape {out_f}x{in_f} is not a multiple of {DIM_MULTIPLE}"
    if not is_two_four(layer.weight):
        return "weight is not 2:4"
    return None


class SemiStructuredLinear(nn.Module):
    """nn.Linear with its 2:4 weight compressed for the sparse tensor cores."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        from torch.sparse import to_sparse_semi_structured

        self.weight = nn.Parameter(to_sparse_semi_structured(layer.weight.detach()), requires_grad=False)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = F.linear(x.reshape(-1, x.shape[-1]), self.weight, self.bias)
        return y.reshape(*lead, y.shape[-1])


def gpu_latency(plain: nn.Module, x: Tensor, *, dtype: torch.dtype = torch.float16, repeats: int = 50,
                warmup: int = 10) -> dict[str, object]:
    """Median ms of the dense model and of the one with its 2:4 linear layers semi-structured."""
    device = torch.device("cuda")
    capability = torch.cuda.get_device_capability(device)
    dense = copy.deepcopy(plain).eval().to(device=device, dtype=dtype)
    sparse = copy.deepcopy(dense)
    choices: dict[str, str] = {}
    for name, layer in list(sparse.named_modules()):
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            continue
        problem = semi_structured_problem(layer, capability, dtype)
        choices[name] = "semi_structured" if problem is None else f"dense ({problem})"
        if problem is None:
            parent, _, child = name.rpartition(".")
            setattr(sparse.get_submodule(parent) if parent else sparse, child, SemiStructuredLinear(layer))
    x = x.to(device=device, dtype=dtype)

    def timed(model: nn.Module) -> float:
        times = []
        with torch.no_grad():
            for i in range(warmup + repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                torch.cuda.synchronize()
                if i >= warmup:
                    times.append(start.elapsed_time(end))
        return statistics.median(times)

    dense_ms, sparse_ms = timed(dense), timed(sparse)
    return {"infer_ms": sparse_ms, "infer_ms_dense": dense_ms, "infer_speedup": dense_ms / sparse_ms,
            "choices": choices}
