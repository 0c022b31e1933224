"""CPU inference of a folded sparse model with CSR layers, chosen per layer by measurement.

A linear layer y = x Wᵀ + b runs as (W_csr · xᵀ)ᵀ + b (`torch.sparse.mm`); a conv (groups 1)
is lowered to the same sparse matmul over its im2col columns (`F.unfold`): W_csr of shape
(out, c·kh·kw) times the (c·kh·kw, batch·L) columns. CSR sums each output's products in
another order than the dense kernels, so outputs match dense to float tolerance, not bit
for bit (`CSR_RTOL`, `CSR_ATOL`).

Whether CSR wins depends on density and shape (at density 0.1 a 300x784 layer gains ~2x,
a ResNet-18 3x3 conv as im2col loses ~0.6x): every layer is timed both ways at its own input
in the model (captured at the measured batch) and keeps the faster, so the model is never
slower than dense up to timing noise. Times are medians of repeats after warm-up, with the
thread count pinned to the trial's CPU share and the whole measurement bounded in seconds.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.keys import INFER_MS_DENSE_KEY, INFER_MS_KEY, INFER_SPEEDUP_KEY

__all__ = ["CSR_ATOL", "CSR_RTOL", "CsrConv2d", "CsrLinear", "Latency", "measure_latency", "sparse_model",
           "trial_threads"]

CSR_RTOL = 1e-5
CSR_ATOL = 1e-5


def _csr(weight: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return weight.to_sparse_csr()


class CsrLinear(nn.Module):
    """nn.Linear with its weight as a CSR matrix."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.weight_csr = _csr(layer.weight.detach())
        self.bias = None if layer.bias is None else layer.bias.detach()
        self.out_features = layer.out_features

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = torch.sparse.mm(self.weight_csr, x.reshape(-1, x.shape[-1]).t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


class CsrConv2d(nn.Module):
    """nn.Conv2d (groups 1, zero padding) as a CSR matmul over its im2col columns."""

    def __init__(self, layer: nn.Conv2d) -> None:
        super().__init__()
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError("CSR conv needs groups=1, zero padding and explicit padding sizes")
        self.weight_csr = _csr(layer.weight.detach().reshape(layer.out_channels, -1))
        self.bias = None if layer.bias is None else layer.bias.detach()
        self.geometry = (layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        self.out_channels = layer.out_channels

    def forward(self, x: Tensor) -> Tensor:
        kernel, dilation, padding, stride = self.geometry
        b, _, h, w = x.shape
        cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C·k·k, L)
        ckk, length = cols.shape[1], cols.shape[2]
        y = torch.sparse.mm(self.weight_csr, cols.transpose(0, 1).reshape(ckk, b * length))
        y = y.reshape(self.out_channels, b, length).transpose(0, 1)
        ho = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
        wo = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
        y = y.reshape(b, self.out_channels, ho, wo)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


def _csr_of(layer: nn.Module) -> nn.Module | None:
    if isinstance(layer, nn.Linear):
        return CsrLinear(layer)
    if isinstance(layer, nn.Conv2d):
        try:
            return CsrConv2d(layer)
        except ValueError:
            return None
    return None


def trial_threads() -> int:
    """The trial's CPU share: OMP_NUM_THREADS (Ray sets it to the trial's CPUs), else torch's."""
    share = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(share)) if share.isdigit() else torch.get_num_threads()


def _paired_ms(a: Callable[[], object], b: Callable[[], object], *, warmup: int, repeats: int,
               deadline: float) -> tuple[float, float]:
    """Median ms of `a` and of `b`, timed alternately (load changes hit both alike)."""
    for _ in range(warmup):
        a()
        b()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() > deadline and len(ta) >= 3:
            break
    return statistics.median(ta), statistics.median(tb)


@dataclass
class Latency:
    """What `measure_latency` found: model times (ms) and each layer's choice."""

    infer_ms: float
    infer_ms_dense: float
    choices: dict[str, str] = field(default_factory=dict)  # layer -> "csr" | "dense"
    layer_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # layer -> (dense, csr)
    threads: int = 1
    batch: int = 0

    @property
    def speedup(self) -> float:
        return self.infer_ms_dense / self.infer_ms if self.infer_ms > 0 else float("nan")

    def metrics(self) -> dict[str, float]:
        return {INFER_MS_KEY: self.infer_ms, INFER_MS_DENSE_KEY: self.infer_ms_dense, INFER_SPEEDUP_KEY: self.speedup}


def _layer_inputs(model: nn.Module, names: list[str], x: Tensor) -> dict[str, Tensor]:
    seen: dict[str, Tensor] = {}

    def keeper(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, inp: tuple[Tensor, ...], _out: Tensor) -> None:
            seen.setdefault(name, inp[0].detach())  # (a hook returning a value would replace the output)
        return hook

    hooks = [model.get_submodule(n).register_forward_hook(keeper(n)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def sparse_model(plain: nn.Module, choices: dict[str, str]) -> nn.Module:
    """A copy of the folded model with the layers chosen "csr" as CSR layers."""
    out = copy.deepcopy(plain).eval()
    for name, how in choices.items():
        if how != "csr":
            continue
        layer = out.get_submodule(name)
        replacement = _csr_of(layer)
        assert replacement is not None
        parent_name, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, child, replacement)
    return out


def measure_latency(plain: nn.Module, x: Tensor, *, seconds: float, threads: int | None = None,
                    warmup: int = 1, repeats: int = 15) -> Latency:
    """Per-layer CSR-or-dense choice, then the model's median latency both ways (CPU).

    Two thirds of `seconds` (from the start, the capture of each layer's input included) are
    shared by the per-layer choices, each layer getting an equal share of what is left (a layer
    whose turn comes after that stays dense); the rest goes to the two model timings. Each
    timing takes at least 3 repeats, so a slow model can overrun the bound by that much; raise
    `seconds` for large models on CPU (a Conv-8 forward at batch 64 takes ~1 s on one thread).
    """
    plain = plain.eval().cpu()
    threads = threads or trial_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            start = time.perf_counter()
            names = [n for n, m in plain.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            inputs = _layer_inputs(plain, names, x)
            choices: dict[str, str] = {}
            layer_ms: dict[str, tuple[float, float]] = {}
            layers_until = start + seconds * 2 / 3
            for i, name in enumerate(names):
                layer = plain.get_submodule(name)
                now = time.perf_counter()
                # an equal share of what is left: a quick layer leaves its time to the next ones
                end = now + (layers_until - now) / (len(names) - i)
                csr = _csr_of(layer) if now < layers_until and name in inputs else None
                if csr is None:
                    choices[name] = "dense"
                    continue
                inp = inputs[name]
                layer_ms[name] = _paired_ms(lambda layer=layer, inp=inp: layer(inp),
                                            lambda csr=csr, inp=inp: csr(inp),
                                            warmup=warmup, repeats=repeats, deadline=end)
                choices[name] = "csr" if layer_ms[name][1] < layer_ms[name][0] else "dense"
            deadline = max(start + seconds, time.perf_counter() + seconds / 3)
            if not any(v == "csr" for v in choices.values()):  # the sparse model is the dense one
                dense_ms, _ = _paired_ms(lambda: plain(x), lambda: None, warmup=warmup, repeats=repeats,
                                         deadline=deadline)
                return Latency(dense_ms, dense_ms, choices, layer_ms, threads, int(x.shape[0]))
            fast = sparse_model(plain, choices)
            dense_ms, sparse_ms = _paired_ms(lambda: plain(x), lambda: fast(x), warmup=warmup,
                                             repeats=repeats, deadline=deadline)
        if sparse_ms > dense_ms:
            # the layers' gains did not add up in the whole model: dense everywhere, as promised
            choices = dict.fromkeys(choices, "dense")
            sparse_ms = dense_ms
        return Latency(sparse_ms, dense_ms, choices, layer_ms, threads, int(x.shape[0]))
    finally:
        torch.set_num_threads(before)
