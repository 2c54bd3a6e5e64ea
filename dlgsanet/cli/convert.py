"""``dlgsanet convert IN OUT``: official ``.pth`` (pickle) -> ``.safetensors`` with the config."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import CONTAINER_KEY, model_from_state_dict, read_checkpoint, save_model
from ..errors import DLGSANetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="checkpoint to read (.pth/.pt/.ckpt/.safetensors)")
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix.lower() != ".safetensors":
        raise DLGSANetError(f"OUTPUT must be a .safetensors file name, got {out.name}")
    if out.exists() and not args.overwrite:  # before the (slow) read, and in the CLI's words
        raise DLGSANetError(f"{out} already exists; add --overwrite to replace it or choose another name")
    sd, metadata = read_checkpoint(args.input)
    model = model_from_state_dict(sd)
    out = save_model(model, args.output, overwrite=args.overwrite,
                     metadata={"converted_from": Path(args.input).name,
                               "source_format": metadata.get(CONTAINER_KEY, "")})
    print(f"wrote {out} (DLGSANet-{(model.preset or 'custom').capitalize()} x{model.scale}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0
