"""GPU packing and cost estimates: how much of a GPU a trial needs, and what a sweep costs.

Why pack: the papers' small models (MLPs, LeNets, Conv-2..8, CIFAR ResNet-20/56 at 32x32)
leave a GPU mostly idle. A step of a few GFLOP is over before the next one is launched, so
Python and kernel-launch time dominate. Several such trials on one GPU (Ray's fractional
`num_gpus`) finish a study in a fraction of the GPU-hours. Large models fill a GPU alone.

How `--gpus-per-worker auto` picks a share, per trial, from a profile of its model:
- **Compute.** A training step costs about 3 forward passes: 3 * FLOPs/sample * batch.
  A GPU is taken as saturated by a step of `SATURATING_STEP_GFLOP`. Fewer FLOPs per step
  let floor(SATURATING_STEP_GFLOP / step) trials share it, rounded down to 1, 2, 4 or 8.
- **Memory.** Ray does not enforce GPU memory, so the share must leave room for every
  packed trial: CUDA context, 4 copies of the parameters (weights or scores, gradients,
  optimizer state, the frozen weights of supermasks), stored activations (forward outputs,
  twice for the backward pass) and the in-memory dataset, which the engine keeps on the
  GPU. `ASSUMED_GPU_MEMORY_GB` is the smallest training GPU worth planning for (T4/V100-16GB).
  A bigger card only packs as much as compute allows.

Profiles (parameters, FLOPs and activation bytes per sample) are measured on the real model
built on PyTorch's meta device, with `torch.utils.flop_counter`: nothing is allocated, and
they follow the config's width, input size and classes.

Cost estimates (`--dry-run`) multiply training steps by seconds per step from
`orchestrator/cluster/step_costs.json` (measured by `benchmarks/step_costs.py`: CPU figures from this
repository's machine, GPU figures where measured). Without a measured GPU figure the GPU
time comes from FLOPs at `ASSUMED_GPU_TFLOPS`, with a floor of `MIN_GPU_STEP_S`; the output
says which.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainables.config import DATASETS, ExperimentConfig

SATURATING_STEP_GFLOP = 400.0
ASSUMED_GPU_MEMORY_GB = 16.0
MAX_TRIALS_PER_GPU = 8
CUDA_CONTEXT_GB = 0.5
PARAM_COPIES = 4
MEMORY_HEADROOM = 0.9  # of a packed slot: the allocator's fragmentation and eval batches
# GPU time without a measured figure: FLOPs at this rate, and never less than the floor
# (kernel launches and the Python loop of one step).
ASSUMED_GPU_TFLOPS = 10.0
MIN_GPU_STEP_S = 0.004

AUTO = "auto"


@dataclass(frozen=True)
class ModelProfile:
    """What one training sample costs a model, for one input shape."""

    model: str
    params: int
    flops_per_sample: float  # forward pass, 2 per multiply-add
    activation_bytes_per_sample: float  # float32 outputs of every leaf module in a forward

    def step_gflop(self, batch: int) -> float:
        """Forward and backward of one batch (backward ~ 2 forwards)."""
        return 3 * self.flops_per_sample * batch / 1e9


def _profile_key(cfg: ExperimentConfig) -> tuple:
    spec = DATASETS[cfg.data.dataset]
    return (cfg.model.name, cfg.model.width, cfg.model.mlp_hidden, spec.channels,
            cfg.data.resize or spec.image_size, spec.num_classes)


_PROFILES: dict[tuple, ModelProfile] = {}


def profile(cfg: ExperimentConfig) -> ModelProfile:
    """The model's profile at the config's input shape (cached per architecture and shape)."""
    key = _profile_key(cfg)
    if key not in _PROFILES:
        _PROFILES[key] = _measure(cfg)
    return _PROFILES[key]


def _measure(cfg: ExperimentConfig) -> ModelProfile:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainables.models import DENSE, build_model, input_shape

    channels, side, _ = input_shape(cfg)
    with torch.device("meta"):
        model = build_model(cfg, DENSE)
    activations = [0]

    def count(module: torch.nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and next(module.children(), None) is None:
            activations[0] += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with FlopCounterMode(display=False) as flops:
            model(torch.empty(1, channels, side, side, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return ModelProfile(model=cfg.model.name, params=sum(p.numel() for p in model.parameters()),
                        flops_per_sample=float(flops.get_total_flops()),
                        activation_bytes_per_sample=4.0 * activations[0])


def dataset_gpu_bytes(cfg: ExperimentConfig) -> float:
    """What the engine keeps on the GPU of the dataset: the training split, stored compactly
    (uint8 images; float32 for digits and tables), plus ~20% for the test split. Streamed
    (ImageFolder) datasets stay on disk."""
    spec = DATASETS[cfg.data.dataset]
    if spec.streamed:
        return 0.0
    side = cfg.data.resize or spec.image_size
    itemsize = 4 if spec.tabular or cfg.data.dataset == "digits" else 1
    return 1.2 * spec.train_size * spec.channels * side * side * itemsize


def memory_gb(cfg: ExperimentConfig) -> float:
    """GPU memory one trial needs (one DDP worker: its share of the global batch)."""
    p = profile(cfg)
    batch = cfg.data.batch_size
    return (CUDA_CONTEXT_GB * 1e9 + PARAM_COPIES * 4 * p.params
            + 2 * p.activation_bytes_per_sample * batch + dataset_gpu_bytes(cfg)) / 1e9


def trials_per_gpu(cfg: ExperimentConfig, gpu_memory_gb: float = ASSUMED_GPU_MEMORY_GB) -> int:
    """1, 2, 4 or 8: as many as neither compute nor memory rules out."""
    step = profile(cfg).step_gflop(cfg.data.batch_size)
    by_compute = max(1, min(MAX_TRIALS_PER_GPU, math.floor(SATURATING_STEP_GFLOP / max(step, 1e-9))))
    by_memory = max(1, math.floor(MEMORY_HEADROOM * gpu_memory_gb / memory_gb(cfg)))
    n = min(by_compute, by_memory)
    return 1 << (n.bit_length() - 1)  # largest power of two <= n


def gpu_share(cfg: ExperimentConfig, workers: int = 1,
              gpu_memory_gb: float = ASSUMED_GPU_MEMORY_GB) -> float:
    """`--gpus-per-worker auto` for one trial: 1 / trials_per_gpu; DDP workers take whole GPUs
    (NCCL ranks cannot share one)."""
    if workers > 1:
        return 1.0
    return 1.0 / trials_per_gpu(cfg, gpu_memory_gb)


# ----- cost estimates --------------------------------------------------------------------

def train_steps(cfg: ExperimentConfig) -> int:
    """Optimizer steps of a whole trial: every epoch of every cycle (drop_last, capped)."""
    spec = DATASETS[cfg.data.dataset]
    per_epoch = max(1, spec.train_size // cfg.data.batch_size)
    if cfg.run.max_steps_per_epoch:
        per_epoch = min(per_epoch, cfg.run.max_steps_per_epoch)
    return per_epoch * cfg.total_epochs


@dataclass(frozen=True)
class StepTime:
    """Seconds per optimizer step, and where the figure comes from."""

    seconds: float
    source: str  # "measured" | "scaled" (measured for this model, other batch/shape) | "flops"


STEP_COSTS_FILE = Path(__file__).with_name("step_costs.json")


@functools.cache
def step_costs() -> dict[str, dict[str, dict[str, float]]]:
    """device -> model -> {batch, seconds, flops_per_sample}: the measured table
    (`python -m benchmarks.step_costs --write` rewrites it)."""
    return json.loads(STEP_COSTS_FILE.read_text())["costs"]


def _scaled(cfg: ExperimentConfig, device: str) -> StepTime | None:
    """A measured figure of this model, scaled linearly to the config's batch and FLOPs."""
    entry = step_costs().get(device, {}).get(cfg.model.name)
    if entry is None:
        return None
    ref_flops, batch, seconds = entry["flops_per_sample"], entry["batch"], entry["seconds"]
    flops = profile(cfg).flops_per_sample
    factor = (cfg.data.batch_size / batch) * (flops / ref_flops if ref_flops else 1.0)
    exact = cfg.data.batch_size == batch and abs(flops - ref_flops) <= 1e-6 * max(ref_flops, 1)
    return StepTime(seconds * factor, "measured" if exact else "scaled")


def cpu_step(cfg: ExperimentConfig) -> StepTime | None:
    """CPU seconds per step from the measured table (None for a model not measured)."""
    return _scaled(cfg, "cpu")


def gpu_step(cfg: ExperimentConfig) -> StepTime:
    """GPU seconds per step: measured when the table has it, else from FLOPs."""
    measured = _scaled(cfg, "gpu")
    if measured is not None:
        return measured
    step = profile(cfg).step_gflop(cfg.data.batch_size) * 1e9
    return StepTime(max(MIN_GPU_STEP_S, step / (ASSUMED_GPU_TFLOPS * 1e12)), "flops")


@dataclass(frozen=True)
class TrialEstimate:
    model: str
    steps: int
    cpu: StepTime | None
    gpu: StepTime
    share: float  # auto GPU share

    @property
    def gpu_hours(self) -> float:
        return self.steps * self.gpu.seconds / 3600

    @property
    def cpu_hours(self) -> float | None:
        return None if self.cpu is None else self.steps * self.cpu.seconds / 3600


def estimate(configs: Iterable[ExperimentConfig], workers: int = 1) -> list[TrialEstimate]:
    """One estimate per trial config. A DDP trial counts its GPU-hours over all its workers."""
    out = []
    for cfg in configs:
        gpu = gpu_step(cfg)
        out.append(TrialEstimate(model=cfg.model.name, steps=train_steps(cfg), cpu=cpu_step(cfg),
                                 gpu=StepTime(gpu.seconds, gpu.source),
                                 share=gpu_share(cfg, workers)))
    return out


def _hours(h: float) -> str:
    return f"{h:,.3g}" if h < 100 else f"{h:,.0f}"


def describe_estimate(estimates: Sequence[TrialEstimate], *, workers: int = 1,
                      packing: str = "") -> str:
    """The cost lines of `--dry-run`: per model, then totals unpacked and packed."""
    if not estimates:
        return ""
    by_model: dict[str, list[TrialEstimate]] = {}
    for e in estimates:
        by_model.setdefault(e.model, []).append(e)
    lines = [f"cost estimate ({len(estimates)} trials, training steps only):",
             f"  {'model':<18} {'trials':>6} {'steps/trial':>12} {'CPU s/step':>11} {'GPU s/step':>11}"
             f" {'auto share':>10}"]
    sources = set()
    for model, group in by_model.items():
        steps = sum(e.steps for e in group) / len(group)
        cpu = [e.cpu.seconds for e in group if e.cpu is not None]
        gpu = sum(e.gpu.seconds for e in group) / len(group)
        sources |= {e.gpu.source for e in group} | {e.cpu.source for e in group if e.cpu}
        shares = sorted({e.share for e in group})
        share = ",".join(f"1/{round(1 / s)}" if s < 1 else "1" for s in shares)
        cpu_text = f"{sum(cpu) / len(cpu):.3g}" if cpu else "n/a"
        lines.append(f"  {model:<18} {len(group):>6} {steps:>12,.0f} {cpu_text:>11} {gpu:>11.3g}"
                     f" {share:>10}")
    whole = sum(e.gpu_hours for e in estimates) * workers
    packed = sum(e.gpu_hours * e.share for e in estimates) * workers
    cpu_known = [e.cpu_hours for e in estimates if e.cpu_hours is not None]
    if cpu_known:
        missing = len(estimates) - len(cpu_known)
        lines.append(f"  CPU: {_hours(sum(cpu_known) * workers)} hours of training at the CPU speed "
                     f"benchmarks/step_costs.py measured"
                     + (f" ({missing} trials of unmeasured models not counted)" if missing else ""))
    lines.append(f"  GPU: {_hours(whole)} GPU-hours unpacked (a whole GPU per worker), "
                 f"{_hours(packed)} packed (--gpus-per-worker auto)"
                 + (f"; {packing}" if packing else ""))
    if "flops" in sources:
        lines.append(f"  GPU s/step from FLOPs at an assumed {ASSUMED_GPU_TFLOPS:g} TFLOP/s "
                     f"(>= {MIN_GPU_STEP_S * 1000:g} ms), not measured: run benchmarks/step_costs.py "
                     f"--device cuda on a GPU to measure them")
    if "scaled" in sources:
        lines.append("  s/step scaled from the measured figure to this batch size and input shape")
    return "\n".join(lines)
