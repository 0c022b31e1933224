"""Strong tickets as seed + mask: export one from a checkpoint, rebuild its weights bit-exactly.

An edge-popup ticket is θ0 ⊙ m. θ0 is a pure function of the seed and the architecture:
`trainables.loop.build_state` seeds the global RNG with run.seed, builds the model through the
method's layer factory and lets `EdgePopup.init_model` draw θ0 (and the scores) from CPU
generators seeded from that RNG, so the values do not depend on the device. A ticket file is
therefore the mask file of the checkpoint (format 2, `trainables.sparse.mask_io`, near the
entropy bound) plus, in its schema metadata, the seed and the few config keys that shape θ0
(model, dataset shape, method); no weight is stored. `rebuild_ticket` regenerates θ0 the way
the engine does and returns every parameter of the ticket with the masked weights θ0 ⊙ m.

Not in a ticket: BatchNorm running statistics (non-affine BN has no parameters, but its
running mean and variance come from data; re-estimate them, or evaluate in train mode).
Refused: weight_init=pretrained (θ0 is then a file, not a seed) and multicoated masks (N > 1:
θ0 ⊙ Σ m_k needs the coat depths, not one mask).

The command line:

    python -m trainables.ticket export CHECKPOINT_DIR ticket.parquet
    python -m trainables.ticket rebuild ticket.parquet weights.safetensors [--verify CHECKPOINT_DIR]

CHECKPOINT_DIR is a trial checkpoint (config.json, masks.parquet, state.pt, manifest).
`rebuild` writes θ0 ⊙ m (safetensors, or a torch state dict for .pt/.pth); `--verify`
compares it bit for bit with the checkpoint's own weights ⊙ mask. Bad input ends with one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from torch import Tensor

from trainables.config import ConfigError, ExperimentConfig, SupermaskConfig
from trainables.sparse.mask_io import (
    MaskFileError,
    masks_table,
    read_masks,
    table_to_bytes,
    write_bytes_atomic,
)

__all__ = ["TicketError", "export_ticket", "read_ticket", "rebuild_ticket", "ticket_keys",
           "verify_ticket", "write_ticket"]

TICKET_META = b"sparsesweep.ticket"  # JSON: {"seed": int, "config": {dotted key: value}}


class TicketError(ValueError):
    """A ticket cannot be exported, read or rebuilt (one line, for the CLI)."""


def ticket_keys(cfg: ExperimentConfig) -> dict[str, Any]:
    """The dotted config keys that determine θ0: model, dataset shape, method, seed."""
    flat = cfg.to_flat()
    keep = {k: v for k, v in flat.items()
            if k.startswith(("model.", "method.")) or k in ("data.dataset", "data.resize", "run.seed")}
    return json.loads(json.dumps(keep, default=list))  # tuples as lists, as JSON keeps them


def _check_method(cfg: ExperimentConfig) -> None:
    m = cfg.method
    if not isinstance(m, SupermaskConfig):
        raise TicketError(f"a strong ticket needs a supermask method (edge_popup, iep), not {m.name}")
    if m.weight_init == "pretrained":
        raise TicketError("method.weight_init=pretrained: θ0 comes from a file, not from the seed")
    if m.coats > 1:
        raise TicketError(f"method.coats={m.coats}: a multicoated ticket needs its coat depths, not one mask")


def write_ticket(path: str | os.PathLike[str], cfg: ExperimentConfig, masks: Mapping[str, Tensor]) -> None:
    """Write the ticket of `cfg` (seed and θ0-shaping keys) with `masks` (layer name -> bool)."""
    _check_method(cfg)
    table = masks_table(masks)
    meta = {**(table.schema.metadata or {}),
            TICKET_META: json.dumps({"seed": cfg.run.seed, "config": ticket_keys(cfg)}).encode()}
    write_bytes_atomic(path, table_to_bytes(table.replace_schema_metadata(meta)))


def read_ticket(path: str | os.PathLike[str]) -> tuple[ExperimentConfig, dict[str, Tensor]]:
    """The config a ticket rebuilds from, and its masks."""
    p = Path(path)
    if not p.is_file():
        raise TicketError(f"{p}: no such ticket file")
    try:
        meta = pq.read_schema(p).metadata or {}
    except Exception as e:  # noqa: BLE001 (pyarrow raises several types for a bad file)
        raise TicketError(f"{p}: not a ticket file ({str(e).splitlines()[0]})") from None
    if TICKET_META not in meta:
        raise TicketError(f"{p}: a mask file without a ticket's seed and config (use `ticket export`)")
    body = json.loads(meta[TICKET_META])
    # data_dir only has to be set for validation: a rebuild reads no data
    cfg = ExperimentConfig.from_flat({"data.data_dir": "(not read by a ticket rebuild)", **body["config"],
                                      "run.seed": body["seed"]})
    _check_method(cfg)
    return cfg, read_masks(p)


def initial_model(cfg: ExperimentConfig) -> torch.nn.Module:
    """The model with θ0 exactly as `trainables.loop.build_state` initialises it (on CPU)."""
    from trainables.methods import build_method
    from trainables.models import build_model

    torch.manual_seed(cfg.run.seed)
    method = build_method(cfg)
    model = build_model(cfg, method.layer_factory())
    method.init_model(model)
    return model


def rebuild_ticket(cfg: ExperimentConfig, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Every parameter of the ticket: θ0 ⊙ m for the supermask layers, the rest as initialised.

    Scores are not part of a ticket (the mask is what they selected).
    """
    from trainables.sparse.supermask import supermask_modules

    _check_method(cfg)
    model = initial_model(cfg)
    layers = supermask_modules(model)
    if set(layers) != set(masks):
        raise TicketError(f"the ticket's masks do not match {cfg.model.name}'s layers: "
                          f"{sorted(set(layers) ^ set(masks))[:4]}")
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".scores") or name == "scores":
                continue
            if name in layers:
                mask = masks[name]
                if mask.shape != p.shape:
                    raise TicketError(f"mask {name} has shape {tuple(mask.shape)}, the layer {tuple(p.shape)}")
                out[name] = p.detach() * mask.to(p.dtype)
            else:
                out[name] = p.detach().clone()
    return out


def _checkpoint(directory: Path) -> tuple[ExperimentConfig, dict[str, Tensor]]:
    from trainables.checkpoint_io import CorruptCheckpoint, verify_checkpoint
    from trainables.loop import CONFIG_FILE, MASKS_FILE

    if not directory.is_dir():
        raise TicketError(f"{directory}: no such checkpoint directory")
    try:
        verify_checkpoint(directory)
    except CorruptCheckpoint as e:
        raise TicketError(str(e)) from None
    if not (directory / MASKS_FILE).is_file():
        raise TicketError(f"{directory}: the checkpoint holds no {MASKS_FILE} (not a sparse method)")
    cfg = ExperimentConfig.from_json((directory / CONFIG_FILE).read_text())
    _check_method(cfg)
    return cfg, read_masks(directory / MASKS_FILE)


def export_ticket(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, float]:
    """Write the ticket of a trial checkpoint (config.json + masks.parquet); returns its figures."""
    cfg, masks = _checkpoint(Path(checkpoint))
    write_ticket(out, cfg, masks)
    n = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return {"weights": n, "density": kept / n if n else 0.0, "bytes": Path(out).stat().st_size}


def verify_ticket(rebuilt: Mapping[str, Tensor], checkpoint: str | os.PathLike[str]) -> int:
    """Compare a rebuild with a checkpoint's θ0 ⊙ m bit for bit; returns the tensors compared."""
    from trainables.loop import STATE_FILE

    directory = Path(checkpoint)
    cfg, masks = _checkpoint(directory)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)["model"]
    for name, tensor in rebuilt.items():
        if name not in state:
            raise TicketError(f"{directory}: the checkpoint has no parameter {name}")
        want = state[name] * masks[name].to(state[name].dtype) if name in masks else state[name]
        if want.shape != tensor.shape or not torch.equal(want, tensor):
            raise TicketError(f"rebuild differs from the checkpoint at {name}")
    return len(rebuilt)


# ----- command line ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.ticket",
                                description="A strong ticket as seed + mask, and its bit-exact rebuild.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a ticket (seed + mask) from a trial checkpoint")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("out", type=Path)
    r = sub.add_parser("rebuild", help="regenerate θ0 ⊙ m from a ticket")
    r.add_argument("ticket", type=Path)
    r.add_argument("out", type=Path, help=".safetensors, or .pt/.pth for a torch state dict")
    r.add_argument("--verify", type=Path, metavar="CHECKPOINT_DIR",
                   help="compare the rebuild with this checkpoint's weights, bit for bit")
    return p


def _rebuild(args: argparse.Namespace) -> str:
    cfg, masks = read_ticket(args.ticket)
    tensors = rebuild_ticket(cfg, masks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix in (".pt", ".pth"):
        torch.save(tensors, args.out)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out))
    line = f"rebuilt {len(tensors)} tensors of {cfg.model.name} (seed {cfg.run.seed}) -> {args.out}"
    if args.verify is not None:
        line += f"; bit-identical to {args.verify} ({verify_ticket(tensors, args.verify)} tensors)"
    return line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            out = export_ticket(args.checkpoint, args.out)
            print(f"ticket {args.out}: {out['weights']:,} weights at density {out['density']:.4f}, "
                  f"{out['bytes']:,} bytes")
        else:
            print(_rebuild(args))
    except (TicketError, MaskFileError, ConfigError, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
