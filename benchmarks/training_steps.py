"""Training-step cost of the sparse methods against dense, measured side by side.

    .venv/bin/python -m benchmarks.training_steps                  # light CPU run
    .venv/bin/python -m benchmarks.training_steps --batch 128 --repeats 7 --models resnet18,conv8

Every variant is a real `build_state` (model, method, optimizer as a trial builds them) whose
step is the engine's step (`before_step`, forward, loss, backward, `before_optimizer_step`,
optimizer step, `after_step`), on one fixed synthetic batch of 32x32 images. The variants
run interleaved, round-robin, `--repeats` times after a warm-up step each, and each figure is
the median step of a variant over the median step of dense (all weights trainable): a change
of machine load hits every column alike, so the ratios hold on a shared machine.

Variants (all on the same model and batch):
  dense        method.name=dense: every weight and BatchNorm parameter trained
  ep           edge-popup (k = 0.5): top-k selection cached per score update, shared by the
               forward and the backward, history (ever-selected bits + visit counts) on
  ep_naive     the original hidden-networks code path, for reference: a full sort of |s| in
               every forward (GetSubnet), no history; implemented here only
  ep_notrack   edge-popup with the history off (no ever bits, no visit counts)
  soft_iep     iterative edge-popup, soft pruning (cycle 1: EP at k_1, plus its history)
  multicoat    edge-popup with N = 4 coats (all N thresholds from one bucket count per
               update: `fast_coat_mask`)
  multicoat_topk  the same with N nested top-k's per update (`coat_mask`, before fast_coat_mask)
  multicoat_naive  N full sorts in every forward (the multicoated-supermasks code path)
  dst          DST (magnitude / random growth, ERK at D = 0.2), a step without an update
  dst_update   the same DST step with a topology update in it (Δt = 1): its extra cost is the
               update's cost; `amortised(Δt)` = ((Δt-1)·dst + dst_update) / (Δt·dst)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trainables.config import ExperimentConfig
from trainables.loop import TrainState, build_state
from trainables.methods.base import Position, StepContext
from trainables.sparse.density import kept_count
from trainables.sparse.selection import coat_mask
from trainables.sparse.supermask import SupermaskMixin, compile_ready, supermask_modules

VARIANTS: dict[str, dict[str, Any]] = {
    "dense": {"method.name": "dense"},
    "ep": {"method.name": "edge_popup"},
    "ep_naive": {"method.name": "edge_popup"},
    "ep_notrack": {"method.name": "edge_popup"},
    "soft_iep": {"method.name": "iep", "method.pruning": "soft"},
    "multicoat": {"method.name": "edge_popup", "method.coats": 4},
    "multicoat_topk": {"method.name": "edge_popup", "method.coats": 4},
    "multicoat_naive": {"method.name": "edge_popup", "method.coats": 4},
    "dst": {"method.name": "dst", "method.update_period": 800},
    "dst_update": {"method.name": "dst", "method.update_period": 1},
    # IMP as it trains a round (θ0 kept for the rewind; analyses off); steps: benchmarks.imp_rounds
    "imp": {"method.name": "imp", "method.reinit_baseline": False, "method.lmc_successive": False},
}


def config(model: str, batch: int, overrides: dict[str, Any]) -> ExperimentConfig:
    return ExperimentConfig.from_flat({
        "model.name": model, "data.dataset": "cifar10", "data.data_dir": "/synthetic",
        "data.batch_size": batch, "data.augment": False, "run.deterministic": False,
        "schedule.epochs": 1000, **overrides})


class SortSubnet(torch.autograd.Function):
    """hidden-networks' GetSubnet: a full sort of the scores in every forward; straight-through."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, keep: int) -> torch.Tensor:
        out = scores.clone()
        _, idx = scores.flatten().sort()
        j = scores.numel() - keep
        flat = out.flatten()
        flat[idx[:j]] = 0
        flat[idx[j:]] = 1
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _naive_masked_weight(self: SupermaskMixin) -> torch.Tensor:
    """θ0 ⊙ Σ_coats GetSubnet(|s|): one full sort per coat in every forward, no cache."""
    n = self.scores.numel()
    mask = sum(SortSubnet.apply(self.scores.abs(), kept_count(n, k)) for k in self.coat_rates)
    return self.weight * mask


def _nested_topk_coats(self: SupermaskMixin, s: torch.Tensor, keeps: tuple[int, ...],
                       allowed: torch.Tensor | None) -> torch.Tensor:
    """The coats by N nested top-k's (`coat_mask`), as before `fast_coat_mask`."""
    return coat_mask(s, keeps, allowed)


def _no_history(self: Any, model: torch.nn.Module, ctx: StepContext) -> None:
    """before_step with the exploration history off (non-progressive EP sets no rate per step)."""


@dataclass
class Variant:
    name: str
    state: TrainState
    x: torch.Tensor
    y: torch.Tensor
    step: int = 0
    net: Any = None  # what the forward calls: the model, or its torch.compile wrapper

    def __call__(self) -> None:
        s = self.state
        ctx = StepContext(step=self.step, epoch=0, cycle=1, steps_per_epoch=10**6, optimizer=s.optimizer,
                          x=self.x, y=self.y, sample_batch=None)
        s.method.before_step(s.model, ctx)
        out = (s.model if self.net is None else self.net)(self.x)
        loss = F.cross_entropy(out, self.y)
        extra = s.method.loss_term(s.model, ctx)
        total = loss if extra is None else loss + extra
        s.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if not s.method.before_optimizer_step(s.model, ctx):
            s.optimizer.step()
        s.method.after_step(s.model, ctx)
        self.step += 1


def build_variant(name: str, model: str, batch: int, *, compile_model: bool = False) -> Variant:
    cfg = config(model, batch, VARIANTS[name])
    state = build_state(cfg, DEVICE, 10**6)
    if name.endswith("_naive"):
        for layer in supermask_modules(state.model).values():
            layer.masked_weight = types.MethodType(_naive_masked_weight, layer)  # type: ignore[method-assign]
    if name == "multicoat_topk":
        for layer in supermask_modules(state.model).values():
            layer._select_coats = types.MethodType(_nested_topk_coats, layer)  # type: ignore[method-assign]
    if name in ("ep_naive", "ep_notrack", "multicoat_naive"):
        state.method.before_step = types.MethodType(_no_history, state.method)  # type: ignore[method-assign]
    state.method.on_train_start(state.model, Position(step=0, epoch=0, cycle=1, steps_per_epoch=10**6))
    if name == "dst_update":
        state.method.end_step = 10**9
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(DEVICE)
    y = torch.randint(0, 10, (batch,), generator=g).to(DEVICE)
    # the method's hooks keep the plain module (its layer names); only the forward is compiled
    if compile_model:
        compile_ready()  # the supermask layers' mask cache stays out of the graph
    v = Variant(name, state, x, y, net=torch.compile(state.model) if compile_model else None)
    if name == "dst_update":
        v.step = 1  # step 0 never updates
    return v


#: The clock of every figure: this process's CPU time (user + system, all its threads). On a
#: machine shared with other jobs, wall time counts the time other processes hold the cores;
#: CPU time counts the work of the step itself (set BENCH_CLOCK=wall for wall-clock time).
CLOCK: Callable[[], float] = time.perf_counter if os.environ.get("BENCH_CLOCK") == "wall" else time.process_time
DEVICE = torch.device("cpu")


def _cuda_clock() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def use_device(name: str) -> None:
    """Build every variant on `name`; on CUDA the clock is wall time after a synchronize
    (CPU time would not count the kernels). Not yet run on a GPU."""
    global DEVICE, CLOCK
    DEVICE = torch.device(name)
    if DEVICE.type == "cuda":
        CLOCK = _cuda_clock


def interleaved_medians(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds (CLOCK) of each function, called round-robin `repeats` times after `warmup` calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = CLOCK()
            fn()
            times[name].append(CLOCK() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(model: str, batch: int, repeats: int, variants: list[str],
            compile_model: bool = False) -> dict[str, float]:
    """Median seconds per step of each variant (dense always included)."""
    names = ["dense", *[v for v in variants if v != "dense"]]
    built = {n: build_variant(n, model, batch, compile_model=compile_model) for n in names}
    return interleaved_medians(dict(built.items()), repeats, warmup=2 if compile_model else 1)


def _status_mb(field: str) -> float:
    for line in open("/proc/self/status").read().splitlines():  # noqa: SIM115
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss(variant: str, model: str, batch: int, steps: int = 3) -> dict[str, float]:
    """Peak RSS in MB of `steps` training steps of `variant` in THIS process (Linux).

    After the imports the high-water mark is reset (`/proc/self/clear_refs` <- 5), so the
    imports' transient peak does not hide a small model: base_mb is the resident set before
    the model is built, peak_mb the high-water mark after the steps.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_mb("VmRSS")
    v = build_variant(variant, model, batch)
    for _ in range(steps):
        v()
    out = {"base_mb": base, "peak_mb": _status_mb("VmHWM")}
    if DEVICE.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def component_seconds(variant: Variant, part: str, repeats: int) -> tuple[float, float]:
    """(median step, median of one hook inside it) over `repeats` steps of one variant.

    part="history": edge-popup's `before_step` with this step's masks already selected (so
    what is timed is the history alone: packing, ORs, visit counts); part="update": DST's
    `before_optimizer_step` on an update step (the topology update alone).
    """
    method = variant.state.method
    name = "before_step" if part == "history" else "before_optimizer_step"
    inner = getattr(method, name)
    spent: list[float] = []

    def timed(*a: Any) -> Any:
        if part == "history":
            for layer in supermask_modules(variant.state.model).values():
                layer.current_mask()  # the selection: not the history's cost
        t0 = CLOCK()
        out = inner(*a)
        spent.append(CLOCK() - t0)
        return out

    setattr(method, name, timed)
    variant()  # warm-up
    spent.clear()
    steps = []
    for _ in range(repeats):
        t0 = CLOCK()
        variant()
        steps.append(CLOCK() - t0)
    setattr(method, name, inner)
    return statistics.median(steps), statistics.median(spent)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="conv8,resnet18")
    p.add_argument("--batch", type=int, default=32, help="batch (full size: 128; 32 keeps "
                   "the light CPU run short)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--compile", action="store_true", help="torch.compile every model (inductor)")
    p.add_argument("--rss", metavar="VARIANT", help="print peak RSS (JSON) of a few steps of VARIANT "
                   "on the first model, in this process, and exit")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    use_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss:
        import json

        print(json.dumps(peak_rss(args.rss, args.models.split(",")[0], args.batch)))
        return
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, median of {args.repeats} interleaved steps")
    for model in args.models.split(","):
        med = measure(model, args.batch, args.repeats, args.variants.split(","), args.compile)
        base = med["dense"]
        for name, s in med.items():
            print(f"{model:<10} {name:<16} {s * 1e3:9.1f} ms  {s / base:6.3f}x dense", flush=True)


if __name__ == "__main__":
    main()
