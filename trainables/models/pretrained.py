"""Pre-trained weights for the conv / linear layers of a zoo model (soft-iep-appendix C.2.4).

Edge-popup on pre-trained weights (after Zhang et al. 2023) freezes a trained network's
weights instead of random ones and learns the mask over them. What it needs from a file is
`<module>.weight` of every conv and linear layer, by module name; BatchNorm is non-affine
and supermask layers carry no bias, so nothing else is read.

Files are a `.safetensors` file or a torch file read with `torch.load(weights_only=True)`:
tensors and plain containers only, never an arbitrary pickled object (a pickle can run code
when it is loaded). The state dict may sit at the top level or under "model" (our engine's
checkpoints) or "state_dict"; a DDP "module." prefix on every key is dropped.

`check_pretrained` runs before a sweep starts: it reads only shapes (the safetensors header;
a torch file mapped onto the meta device) and builds the model on the meta device, so a file
of the wrong architecture costs neither memory nor time and fails as one ConfigError line.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from trainables.config import ConfigError, ExperimentConfig
from trainables.models import DENSE, build_model
from trainables.sparse.masked import MaskedMixin

__all__ = ["check_pretrained", "copy_pretrained_weights", "load_weight_tensors", "weight_layers",
           "weight_shapes"]

_STATE_DICT_KEYS = ("model", "state_dict")
_MAX_HEADER = 100 * 2**20  # a safetensors header larger than this is not a real one


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv and linear layers (dense, supermask or masked: all subclass these) by weight key."""
    return {f"{name}.weight" if name else "weight": m for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def load_weight_tensors(path: str | Path) -> dict[str, Tensor]:
    """The state dict in `path` (.safetensors, or a torch file read weights-only), on CPU."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _strip_ddp_prefix(load_file(str(path), device="cpu"))
    return _strip_ddp_prefix(_find_state_dict(_torch_load(path, "cpu"), path))


def copy_pretrained_weights(model: nn.Module, tensors: Mapping[str, Tensor]) -> list[str]:
    """Copy `<module>.weight` into every conv / linear layer of `model`; returns the keys.

    Every layer is checked before any is written, so a bad file leaves the model untouched;
    a file with conv / linear weights the model lacks (another architecture) is refused too.
    Masked-weight layers re-apply their mask, which keeps pruned weights at exactly zero.
    """
    layers = weight_layers(model)
    expected = {key: tuple(m.weight.shape) for key, m in layers.items()}
    problem = _first_mismatch(expected, {k: tuple(t.shape) for k, t in tensors.items()})
    if problem:
        raise ValueError(problem)
    with torch.no_grad():
        for key, module in layers.items():
            module.weight.copy_(tensors[key])
            if isinstance(module, MaskedMixin):
                module.apply_mask_()
    return list(layers)


def check_pretrained(cfg: ExperimentConfig, path: str | Path, *,
                     key: str = "method.pretrained_path") -> None:
    """Raise a one-line ConfigError unless `path` holds a weight of the right shape for every
    conv / linear layer of cfg's model. Layer names and shapes do not depend on the layer
    factory, so the model is built dense, on the meta device."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: no file at {str(path)!r}")
    try:
        shapes = weight_shapes(path)
    except (ValueError, OSError, RuntimeError) as e:
        reason = _one_line(e)
        raise ConfigError(f"{key}: {reason if path.name in reason else f'{path.name}: {reason}'}") from None
    with torch.device("meta"):
        model = build_model(cfg, DENSE)
    expected = {k: tuple(m.weight.shape) for k, m in weight_layers(model).items()}
    problem = _first_mismatch(expected, shapes)
    if problem:
        raise ConfigError(f"{key}: {path.name} does not fit model.name={cfg.model.name}: {problem}")


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor in `path`, without reading the tensor data."""
    path = Path(path)
    if path.suffix == ".safetensors":
        shapes = _safetensors_shapes(path)
    else:
        state = _find_state_dict(_torch_load(path, "meta"), path)
        shapes = {k: tuple(t.shape) for k, t in state.items()}
    return _strip_ddp_prefix(shapes)


# ----- helpers ---------------------------------------------------------------------------

def _torch_load(path: Path, map_location: str) -> Any:
    """torch.load restricted to tensors and plain containers (weights_only=True)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a page of advice; the line naming the refused global is the news.
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln]
        why = lines[0].removeprefix("WeightsUnpickler error: ").split(". ")[0] if lines else _one_line(e)
        raise ValueError(f"{path.name} is not a weights-only torch file (refused to unpickle "
                         f"arbitrary objects): {why}") from None


def _is_tensor_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()))


def _find_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    if _is_tensor_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if _is_tensor_dict(obj.get(key)):
                return dict(obj[key])
    raise ValueError(f"{path.name} holds no state dict (a dict of tensors, at the top level or "
                     f"under {' or '.join(map(repr, _STATE_DICT_KEYS))})")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes from the header: 8 bytes little-endian length, then that much JSON."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size > _MAX_HEADER:
            raise ValueError(f"{path.name}: safetensors header of {size} bytes is not plausible")
        raw = f.read(size)
    try:
        header = json.loads(raw)
        return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{path.name}: unreadable safetensors header ({_one_line(e)})") from None


def _strip_ddp_prefix(state: dict[str, Any]) -> dict[str, Any]:
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _first_mismatch(expected: Mapping[str, tuple[int, ...]],
                    found: Mapping[str, tuple[int, ...]]) -> str | None:
    """The first layer (model order) missing from `found` or of another shape, as a sentence;
    else the first conv / linear weight of `found` (a `.weight` of 2 or 4 dims) that the model
    lacks: a file of a deeper network has all of a shallower one's layers, and is still wrong."""
    for key, shape in expected.items():
        if key not in found:
            return f"no tensor {key!r} (the model expects shape {list(shape)})"
        if tuple(found[key]) != shape:
            return f"{key!r} has shape {list(found[key])}, the model expects {list(shape)}"
    for key, shape in found.items():
        if key.endswith(".weight") and len(shape) in (2, 4) and key not in expected:
            return f"the file has a conv/linear weight {key!r} {list(shape)} that the model lacks"
    return None


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
