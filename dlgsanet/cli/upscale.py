"""``dlgsanet upscale INPUT... -o OUT``: upscale image files and folders.

Never overwrites without ``--overwrite`` and never overwrites an input; RGBA keeps alpha,
grayscale stays grayscale, 16-bit PNGs stay 16-bit.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..checkpoint import load_model
from ..devices import pick_device, pick_dtype
from ..errors import DLGSANetError
from ..images import EXTENSIONS, is_image_file, read_image, write_image
from ..alpha import upscale_rgba


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    parser.add_argument("-o", "--output", required=True,
                        help="output folder (created), or a file name when there is a single input image")
    parser.add_argument("--model", help="checkpoint (.pth/.safetensors); default: the bundled DLGSANet-Tiny x4")
    parser.add_argument("--tile", type=int, default=None, help="tile size in input pixels (default: automatic)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap in input pixels (default: tuned)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--format", choices=["same", "png", "jpg", "webp"], default="same",
                        help="output format (default: same as the input)")
    parser.add_argument("--suffix", default="", help="appended to output file stems, e.g. _x4")
    parser.add_argument("--recursive", action="store_true", help="also look into sub-folders")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 can be faster on a busy machine)")


def _collect(inputs: list[str], recursive: bool) -> list[tuple[Path, Path]]:
    """(file, path relative to its root) for every image named directly or found in a folder."""
    found = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(f for f in p.glob(pattern) if f.is_file() and is_image_file(f))
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            if not is_image_file(p):
                raise DLGSANetError(f"{p} is not a PNG, JPEG or WebP image")
            found.append((p, Path(p.name)))
        else:
            raise DLGSANetError(f"input not found: {p}")
    if not found:
        raise DLGSANetError("no PNG, JPEG or WebP images found in the inputs")
    return found


def _plan(args: argparse.Namespace, files: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    out = Path(args.output)
    single_file = len(files) == 1 and out.suffix.lower() in EXTENSIONS and not out.is_dir()
    plan = []
    for src, rel in files:
        if single_file:
            dst = out
        else:
            suffix = src.suffix if args.format == "same" else "." + args.format
            dst = out / rel.with_name(rel.stem + args.suffix + suffix)
        if dst.resolve() == src.resolve():
            raise DLGSANetError(f"output {dst} would replace its input; choose another folder or --suffix")
        if dst.exists() and not args.overwrite:
            raise DLGSANetError(f"{dst} already exists; use --overwrite to replace it or choose another output")
        plan.append((src, dst))
    targets = [d for _, d in plan]
    if len(set(targets)) != len(targets):
        raise DLGSANetError("several inputs map to the same output file; use separate runs or --suffix")
    return plan


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    plan = _plan(args, _collect(args.inputs, args.recursive))
    device = pick_device(args.device)
    model = load_model(args.model, device=device, dtype=pick_dtype(args.precision, device))
    bar = tqdm(total=len(plan), unit="img", disable=args.quiet, file=sys.stderr)
    for src, dst in plan:
        bar.set_description(src.name)
        image = read_image(src)
        rgb, alpha = upscale_with_alpha(model, image.rgb, image.alpha, tile_size=args.tile,
                                        overlap=args.overlap, bar=bar)
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_image(dst, rgb, alpha, grayscale=image.grayscale, bit_depth=image.bit_depth,
                    icc_profile=image.icc_profile, overwrite=args.overwrite)
        bar.update(1)
    bar.close()
    if not args.quiet:
        print(f"upscaled {len(plan)} image(s) x{model.scale} into {Path(args.output)}", file=sys.stderr)
    return 0


def upscale_with_alpha(model, rgb: torch.Tensor, alpha, *, tile_size, overlap, bar):
    """RGB through the model; alpha (if any) upscaled separately and re-attached (shared helper)."""
    def progress(done: int, total: int) -> None:
        bar.set_postfix_str(f"tile {done}/{total}")

    image = rgb if alpha is None else torch.cat([rgb, alpha.to(rgb.dtype)], 0)
    out = upscale_rgba(model, image[None], tile_size=tile_size, overlap=overlap, progress=progress)[0]
    return (out, None) if alpha is None else (out[:3], out[3:])
