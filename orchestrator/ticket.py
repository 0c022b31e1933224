"""`python -m orchestrator.ticket`: a strong ticket as seed + mask, and its bit-exact rebuild.

    python -m orchestrator.ticket export CHECKPOINT_DIR ticket.parquet
    python -m orchestrator.ticket rebuild ticket.parquet weights.safetensors [--verify CHECKPOINT_DIR]

CHECKPOINT_DIR is a trial checkpoint (config.json, masks.parquet, state.pt, manifest). The
ticket is the mask file plus the seed and the config keys that shape θ0; `rebuild` draws θ0
from the seed as the engine does and writes θ0 ⊙ m (safetensors, or a torch state dict for
.pt/.pth); `--verify` compares it bit for bit with the checkpoint's own weights ⊙ mask.
Bad input ends with one line on stderr and exit status 2. The torch side: `trainables.ticket`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainables.config import ConfigError
from trainables.sparse.mask_io import MaskFileError
from trainables.ticket import TicketError, export_ticket, read_ticket, rebuild_ticket, verify_ticket


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrator.ticket", description=__doc__.splitlines()[0])
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
    import torch

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
