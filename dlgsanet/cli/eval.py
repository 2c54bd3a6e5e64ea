"""``dlgsanet eval --data DIR [--model M]``: PSNR/SSIM of a model and of bicubic, as in the paper.

HR images in; LR made by MATLAB-style bicubic downscaling; Y-channel PSNR/SSIM with the scale
cropped at each border (see ``dlgsanet.evaluate`` and docs/evaluation.md). Prints a table;
``--json`` / ``--csv`` also write the results (never over an existing file without
``--overwrite``). The library returns an ``EvalReport`` (numbers only); the three formats of it
are made here (:func:`report_table`, :func:`report_csv`, :func:`report_json`).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import DLGSANetError

if TYPE_CHECKING:
    from ..evaluate import EvalReport


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


def report_dict(report: EvalReport, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """JSON-ready dict (``extra`` keys last); a non-finite PSNR (identical images) becomes None/null."""
    def num(v: Optional[float]) -> Optional[float]:
        return None if v is None or not math.isfinite(v) else v

    return {
        "data": report.data, "model": report.model, "scale": report.scale, "device": report.device,
        "protocol": report.protocol(),
        "mean": {"psnr": num(report.psnr), "ssim": num(report.ssim), "bicubic_psnr": num(report.bicubic_psnr),
                 "bicubic_ssim": num(report.bicubic_ssim), "images": len(report.images),
                 "seconds": round(report.seconds, 4)},
        "images": [{"name": s.name, "width": s.width, "height": s.height, "psnr": num(s.psnr),
                    "ssim": num(s.ssim), "bicubic_psnr": num(s.bicubic_psnr),
                    "bicubic_ssim": num(s.bicubic_ssim), "seconds": round(s.seconds, 4), "tiles": s.tiles}
                   for s in report.images],
        **(extra or {}),
    }


def report_json(report: EvalReport, extra: Optional[dict[str, Any]] = None) -> str:
    """Strict JSON (no NaN/Infinity, which most JSON readers refuse) of :func:`report_dict`."""
    return json.dumps(report_dict(report, extra), indent=2, allow_nan=False) + "\n"


def report_csv(report: EvalReport) -> str:
    """One row per image and a last row named ``mean``; empty cells where not computed."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "width", "height", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "seconds", "tiles"])

    def cell(v: Optional[float], digits: int) -> str:
        return "" if v is None else (repr(v) if not math.isfinite(v) else f"{v:.{digits}f}")

    for s in report.images:
        w.writerow([s.name, s.width, s.height, cell(s.psnr, 6), cell(s.ssim, 8), cell(s.bicubic_psnr, 6),
                    cell(s.bicubic_ssim, 8), f"{s.seconds:.4f}", s.tiles])
    w.writerow(["mean", "", "", cell(report.psnr, 6), cell(report.ssim, 8), cell(report.bicubic_psnr, 6),
                cell(report.bicubic_ssim, 8), f"{report.seconds:.4f}", ""])
    return buf.getvalue()


def report_table(report: EvalReport) -> str:
    """The terminal table: the protocol in two lines, per-image rows and the mean."""
    with_bic = all(s.bicubic_psnr is not None for s in report.images)
    name_w = max([len("mean")] + [len(s.name) for s in report.images])
    head = f"{'image':<{name_w}}  {'size':>9}"
    if with_bic:
        head += f"  {'bicubic PSNR':>12} {'SSIM':>7}"
    head += f"  {'model PSNR':>10} {'SSIM':>7}"
    if with_bic:
        head += f"  {'gain dB':>7}"
    head += f"  {'time s':>7}"

    def row(name: str, size: str, p: Optional[float], q: Optional[float], bp: Optional[float],
            bq: Optional[float], sec: float) -> str:
        line = f"{name:<{name_w}}  {size:>9}"
        if with_bic:
            line += f"  {_fmt(bp, 2):>12} {_fmt(bq, 4):>7}"
        line += f"  {_fmt(p, 2):>10} {_fmt(q, 4):>7}"
        if with_bic:
            gain = None if p is None or bp is None or not math.isfinite(p - bp) else p - bp
            line += f"  {_fmt(gain, 2, sign=True):>7}"
        return line + f"  {sec:>7.2f}"

    title = f"{report.model or 'model'} on {report.data or 'images'} (x{report.scale}, {len(report.images)} images"
    lines = [title + (f", {report.device})" if report.device else ")"),
             f"PSNR (dB) / SSIM on Y (BT.601), {report.scale}-pixel border cropped; "
             f"LR = MATLAB bicubic x1/{report.scale}, 8-bit",
             "", head, "-" * len(head)]
    for s in report.images:
        lines.append(row(s.name, f"{s.width}x{s.height}", s.psnr, s.ssim, s.bicubic_psnr, s.bicubic_ssim, s.seconds))
    lines.append("-" * len(head))
    lines.append(row("mean", "", report.psnr, report.ssim, report.bicubic_psnr, report.bicubic_ssim, report.seconds))
    tiled = [s.name for s in report.images if s.tiles > 1]
    if tiled:
        lines.append(f"note: {len(tiled)} image(s) ran in tiles ({', '.join(tiled[:5])}"
                     f"{', ...' if len(tiled) > 5 else ''}); whole-image scores can differ slightly")
    return "\n".join(lines)


def _fmt(v: Optional[float], digits: int, *, sign: bool = False) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


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

    extra = {"model_file": str(Path(args.model).resolve()) if args.model else "bundled default",
             "dlgsanet_version": __version__}
    print(report_table(report))
    if json_path is not None:
        _write(json_path, report_json(report, extra))
        print(f"wrote {json_path}", file=sys.stderr)
    if csv_path is not None:
        _write(csv_path, report_csv(report))
        print(f"wrote {csv_path}", file=sys.stderr)
    return 0
