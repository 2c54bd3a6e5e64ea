"""``dlgsanet eval --data DIR [--model M]``: PSNR/SSIM of a model and of bicubic, as in the paper.

HR images in; LR made by MATLAB-style bicubic downscaling; Y-channel PSNR/SSIM with the scale
cropped at each border (see ``dlgsanet.evaluate`` and docs/evaluation.md). Prints a table;
``--json`` / ``--csv`` also write the results (never over an existing file without
``--overwrite``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from ..errors import DLGSANetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="folder of HR images (PNG/JPEG/BMP/WebP/TIFF), or a benchmark folder with HR/ inside")
    parser.add_argument("--model", metavar="M",
                        help="checkpoint (.pth/.pt/.ckpt/.safetensors, official ones included); "
                             "default: the bundled DLGSANet-Tiny for --scale")
    parser.add_argument("--scale", type=int, default=None, metavar="S",
                        help="upscaling factor; default: the model's (must match the model when given)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (by name)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--csv", metavar="PATH", help="also write the per-image results as CSV")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --json/--csv files")
    parser.add_argument("--no-bicubic", dest="bicubic", action="store_false",
                        help="skip the bicubic baseline")
    parser.add_argument("--tile", default=None, metavar="PX",
                        help="tile size in LR pixels, at least 96; 0 or auto: as `upscale` (default; "
                             "tiling can move scores slightly)")
    parser.add_argument("--overlap", type=int, default=None, metavar="PX", help="tile overlap in LR pixels")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 can be faster on a busy machine)")


def _check_output(path: Optional[str], overwrite: bool, flag: str) -> Optional[Path]:
    """Refuse to run a long evaluation whose results could not be written at the end."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise DLGSANetError(f"{flag} {p} is a folder; give a file name")
    if p.exists() and not overwrite:
        raise DLGSANetError(f"{p} already exists; use --overwrite to replace it or choose another {flag} path")
    return p


def _write(path: Path, text: str) -> None:
    """Write through a temporary file so an interrupted run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise DLGSANetError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _model_name(model, source: Optional[str]) -> str:
    preset = getattr(model, "preset", None)
    label = f"DLGSANet-{preset.capitalize()}" if preset else "DLGSANet (custom)"
    return f"{label} x{model.scale} ({Path(source).name if source else 'bundled default'})"


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..devices import pick_device
    from ..evaluate import check_files, evaluate_folder, find_images

    from .upscale_plan import parse_tile

    args.tile = parse_tile(args.tile)
    for name in ("scale", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DLGSANetError(f"--{name} must be a positive integer, got {value}")
    if args.overlap is not None and args.overlap < 0:
        raise DLGSANetError(f"--overlap must be zero or more, got {args.overlap}")
    json_path = _check_output(args.json, args.overwrite, "--json")
    csv_path = _check_output(args.csv, args.overwrite, "--csv")
    if json_path is not None and csv_path is not None and json_path.resolve() == csv_path.resolve():
        raise DLGSANetError("--json and --csv name the same file")
    files = find_images(args.data, limit=args.limit)

    device = pick_device(args.device)
    model = load_model(args.model, device=device, scale=args.scale if args.model is None else None)
    if args.scale is not None and args.scale != model.scale:
        raise DLGSANetError(f"{Path(args.model).name if args.model else 'the model'} upscales x{model.scale}; "
                            f"it cannot be evaluated at x{args.scale} (drop --scale or pick an x{args.scale} model)")
    check_files(files, model.scale)

    from tqdm import tqdm

    bar = tqdm(total=len(files), unit="img", disable=args.quiet, file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        report = evaluate_folder(model, args.data, limit=args.limit, bicubic=args.bicubic, tile_size=args.tile,
                                 overlap=args.overlap, progress=progress, model_name=_model_name(model, args.model))
    finally:
        bar.close()
    from .. import __version__

    report.extra["model_file"] = str(Path(args.model).resolve()) if args.model else "bundled default"
    report.extra["dlgsanet_version"] = __version__
    print(report.format_table())
    if json_path is not None:
        _write(json_path, report.to_json())
        print(f"wrote {json_path}", file=sys.stderr)
    if csv_path is not None:
        _write(csv_path, report.to_csv())
        print(f"wrote {csv_path}", file=sys.stderr)
    return 0
