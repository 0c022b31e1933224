"""Fold a trained sparse model's masks into plain `nn.Conv2d` / `nn.Linear` layers and export it.

A supermask layer's forward weight is θ0 ⊙ Σ_i m_i (one coat: θ0 ⊙ m), a masked layer's
θ ⊙ m; the folded layer holds exactly that tensor, so a dense forward of the folded model
computes what the trained model computes, with the same kernels (bit for bit on CPU).

The export (files of `export_files`, under ``export/`` in the trial's artifacts):
  model.safetensors  the folded model's state dict (plain torch names, no scores or masks)
  model.pt2          `torch.export` program of the folded model in eval mode at batch 1..N:
                     loads with `torch.export.load(path).module()`, no sparsesweep needed
  model.json         architecture name, input shape, the trial's config (dotted keys), the
                     mask pattern, and per layer its shape and density
"""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import torch
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

from trainables.sparse.masked import MaskedMixin
from trainables.sparse.supermask import SupermaskMixin

__all__ = ["EXPORT_DIR", "EXPORT_FORMAT", "export_files", "fold_model", "folded_layers", "load_program"]

EXPORT_DIR = "export"
EXPORT_FORMAT = 1


def _folded_weight(module: nn.Module) -> Tensor:
    if isinstance(module, SupermaskMixin):
        return (module.weight * module.coat_depth()).detach()  # θ0 ⊙ Σ_i m_i
    if isinstance(module, MaskedMixin):
        return module.effective_weight().detach()  # θ ⊙ m
    raise TypeError(f"{type(module).__name__} is not a masked layer")


def _plain(module: nn.Module) -> nn.Module:
    """A torch layer of the same geometry holding the folded weight (and the bias)."""
    weight = _folded_weight(module)
    bias = getattr(module, "bias", None)
    if isinstance(module, nn.Conv2d):
        out: nn.Module = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                                   stride=module.stride, padding=module.padding, dilation=module.dilation,
                                   groups=module.groups, bias=bias is not None, padding_mode=module.padding_mode,
                                   device=weight.device, dtype=weight.dtype)
    elif isinstance(module, nn.Linear):
        out = nn.Linear(module.in_features, module.out_features, bias=bias is not None,
                        device=weight.device, dtype=weight.dtype)
    else:  # pragma: no cover - masked layers are conv or linear
        raise TypeError(f"cannot fold {type(module).__name__}")
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias.detach())  # type: ignore[union-attr]
    return out


def fold_model(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode, no gradients) whose masked layers are plain torch layers."""
    plain = copy.deepcopy(model).eval()
    for name, module in list(plain.named_modules()):
        if isinstance(module, (SupermaskMixin, MaskedMixin)):
            parent_name, _, child = name.rpartition(".")
            parent = plain.get_submodule(parent_name) if parent_name else plain
            if not child:  # the model is itself one layer
                plain = _plain(module)
                break
            setattr(parent, child, _plain(module))
    for p in plain.parameters():
        p.requires_grad_(False)
    return plain


def folded_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The conv and linear layers of a folded model, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _program_bytes(plain: nn.Module, example: Tensor) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(plain, (example,), dynamic_shapes=({0: batch},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def load_program(blob: bytes) -> nn.Module:
    """The exported model from model.pt2's bytes (torch only)."""
    return torch.export.load(io.BytesIO(blob)).module()


def export_files(model: nn.Module, cfg: Any, input_shape: tuple[int, int, int], *,
                 pattern: str = "unstructured") -> tuple[nn.Module, dict[str, bytes]]:
    """The folded model (on CPU) and the export's files (name -> bytes)."""
    plain = fold_model(model).cpu()
    state = {k: v.detach().contiguous() for k, v in plain.state_dict().items()}
    layers = {}
    for name, layer in folded_layers(plain).items():
        w = layer.weight
        layers[name] = {"shape": list(w.shape), "density": float(torch.count_nonzero(w)) / w.numel()}
    example = torch.zeros(2, *input_shape)
    try:
        program: bytes | None = _program_bytes(plain, example)
        program_error = ""
    except Exception as e:  # noqa: BLE001 - an architecture torch.export cannot trace: weights still export
        program, program_error = None, f"{type(e).__name__}: {e}".splitlines()[0][:500]
    description = {
        "format": EXPORT_FORMAT,
        "architecture": cfg.model.name,
        "input_shape": list(input_shape),
        "pattern": pattern,
        "files": {"weights": "model.safetensors", "program": "model.pt2" if program else None},
        **({"program_error": program_error} if program_error else {}),
        "load": "torch.export.load('model.pt2').module()  # or the architecture by name + model.safetensors",
        "config": json.loads(json.dumps(cfg.to_flat(), default=list)),
        "layers": layers,
    }
    files = {"model.safetensors": safetensors_save(state), "model.json": json.dumps(description, indent=2).encode()}
    if program is not None:
        files["model.pt2"] = program
    return plain, files
