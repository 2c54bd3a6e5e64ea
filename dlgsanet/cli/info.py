"""``dlgsanet info MODEL``: what a checkpoint holds, without running it."""
from __future__ import annotations

import argparse
import json

from ..checkpoint import CONTAINER_KEY, load_model, read_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="checkpoint (.pth/.pt/.ckpt/.safetensors); default: the bundled x4 model")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def describe(path: str | None) -> dict:
    from ..checkpoint import bundled_model_path, bundled_scale_for

    path = path or str(bundled_model_path(bundled_scale_for(None)))
    sd, metadata = read_checkpoint(path)
    model = load_model(sd, tlc_window=None)
    cfg = model.config
    stored = {k: v for k, v in metadata.items() if k not in (CONTAINER_KEY, "dlgsanet_config")}
    return {
        "file": path,
        "format": metadata.get(CONTAINER_KEY, "unknown"),
        "preset": model.preset or "custom",
        "scale": model.scale,
        "parameters": sum(p.numel() for p in model.parameters()),
        "hyperparameters": cfg.to_dict(),
        "metadata": stored,
    }


def run(args: argparse.Namespace) -> int:
    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"file:        {info['file']}")
    print(f"format:      {info['format']}")
    print(f"model:       DLGSANet-{info['preset'].capitalize()} x{info['scale']}")
    print(f"parameters:  {info['parameters']:,}")
    for key, value in info["hyperparameters"].items():
        print(f"  {key:<14}{value}")
    for key, value in info["metadata"].items():
        print(f"meta {key}: {value if len(str(value)) < 200 else str(value)[:200] + '...'}")
    return 0
