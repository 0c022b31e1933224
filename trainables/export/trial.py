"""The end of a sparse trial: its inference export (artifacts) and its measured speed-up (metrics).

The engine calls `finish_trial` once, after the last epoch of a masked method, on the main
rank. The export's files go into the trial's artifacts under ``export/`` (uploaded to MLflow
beside the masks); the latency is measured on CPU with CSR layers chosen per layer
(`trainables.export.latency`), and the per-layer choice is written as ``export/latency.json``.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from trainables.data import eval_batches
from trainables.export.fold import EXPORT_DIR, export_files
from trainables.export.latency import measure_latency
from trainables.keys import INFER_KEYS, INFER_MS_DENSE_KEY, INFER_MS_KEY, INFER_SPEEDUP_KEY

__all__ = ["INFER_BATCH", "INFER_KEYS", "INFER_MS_DENSE_KEY", "INFER_MS_KEY", "INFER_SPEEDUP_KEY", "finish_trial"]

INFER_BATCH = 64  # the fixed batch: the first INFER_BATCH test examples


def finish_trial(model: nn.Module, cfg: Any, data: Any, artifacts: dict[str, bytes]) -> dict[str, float]:
    """Export the network into `artifacts` and return its latency metrics (none when switched off)."""
    if not cfg.run.export and not cfg.run.infer_seconds:
        return {}
    x, _ = next(eval_batches(data, batch_size=INFER_BATCH, device="cpu"))
    shape = tuple(int(s) for s in x.shape[1:])
    training = model.training
    try:
        plain, files = export_files(model.eval(), cfg, shape, pattern=cfg.sparsity.pattern)  # type: ignore[arg-type]
    finally:
        model.train(training)
    if cfg.run.export:
        for name, blob in files.items():
            artifacts[f"{EXPORT_DIR}/{name}"] = blob
    if not cfg.run.infer_seconds:
        return {}
    device = next(model.parameters()).device
    if device.type == "cuda":  # the trial's own device: 2:4 layers semi-structured, the rest dense
        from trainables.export.semi_structured import gpu_latency

        found = gpu_latency(plain, x.float())
        choices = found.pop("choices")
        artifacts[f"{EXPORT_DIR}/latency.json"] = json.dumps(
            {**found, "device": torch.cuda.get_device_name(device), "kernel": "2:4 semi-structured",
             "batch": int(x.shape[0]), "layers": {n: {"choice": c} for n, c in choices.items()}}, indent=2).encode()
        return {k: float(v) for k, v in found.items()}  # type: ignore[arg-type]
    with torch.inference_mode():
        lat = measure_latency(plain, x.float(), seconds=cfg.run.infer_seconds)
    artifacts[f"{EXPORT_DIR}/latency.json"] = json.dumps({
        **lat.metrics(), "device": "cpu", "kernel": "csr", "threads": lat.threads, "batch": lat.batch,
        "layers": {n: {"choice": c, "ms": lat.layer_ms.get(n)} for n, c in lat.choices.items()},
    }, indent=2).encode()
    return lat.metrics()
