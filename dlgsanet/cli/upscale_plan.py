"""``dlgsanet upscale``, before any work: which files, where their outputs go, which options hold.

Everything a user can get wrong is checked here, before the model is loaded, so a mistake costs
a second, not the minutes of the first image: an output that is an existing file, a file name
for several images, a format we cannot write, outputs that already exist, bad option values.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..checkpoint import bundled_model_path, bundled_scale_for
from ..errors import CheckpointError, DLGSANetError, TileSettingsError
from ..images import EXTENSIONS, UNWRITABLE_SUFFIXES, image_size, is_image_file
from ..tiling.settings import MIN_TILE_SIZE, TileSettings, parse_tile_size
from ..video import VIDEO_EXTENSIONS, check_codec, is_video_file, probe, require_av

WRITABLE = ".png, .jpg, .jpeg or .webp"
WRITABLE_VIDEO = ", ".join(VIDEO_EXTENSIONS)


@dataclass
class Job:
    """One image or video to upscale: where it comes from, where it goes, its (height, width) if known."""

    src: Path
    dst: Path
    size: Optional[tuple[int, int]] = None


@dataclass
class Plan:
    jobs: list[Job]
    skipped: list[Path]       # outputs that exist, kept with --skip-existing
    output: Path


def parse_tile(value: Optional[str]) -> Optional[int]:
    """``--tile``: None/"0"/"auto" = automatic, else a whole number >= MIN_TILE_SIZE."""
    try:
        return parse_tile_size(value)
    except TileSettingsError:
        raise DLGSANetError(f"--tile must be 0 or auto (choose automatically) or a size of at least "
                            f"{MIN_TILE_SIZE} input pixels, got {value}") from None


def tile_settings(args: argparse.Namespace) -> TileSettings:
    """The tiling the options ask for (``args.tile`` already parsed by ``check_options``)."""
    return TileSettings(tile_size=args.tile, overlap=args.overlap, border=args.border)


NAMED_COLOURS = {"white": "#ffffff", "black": "#000000", "gray": "#808080", "grey": "#808080"}


def parse_colour(value: Optional[str]) -> Optional[tuple[float, float, float]]:
    """``--background``: white, black, gray/grey, #RGB or #RRGGBB -> RGB in 0..1."""
    if value is None:
        return None
    text = NAMED_COLOURS.get(value.strip().lower(), value.strip())
    if re.fullmatch(r"#[0-9a-fA-F]{3}", text):
        text = "#" + "".join(c * 2 for c in text[1:])
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", text):
        raise DLGSANetError(f"--background must be white, black, gray or a colour like #ff8800, got {value!r}")
    return tuple(int(text[i:i + 2], 16) / 255.0 for i in (1, 3, 5))


def check_options(args: argparse.Namespace) -> None:
    """Option values that are wrong whatever the inputs."""
    args.tile = parse_tile(args.tile)
    args.background = parse_colour(args.background)
    if args.overlap is not None and args.overlap < 0:
        raise DLGSANetError(f"--overlap must be 0 or more input pixels, got {args.overlap}")
    if args.overlap is not None and args.tile is not None and args.overlap >= args.tile:
        raise DLGSANetError(f"--overlap ({args.overlap}) must be smaller than --tile ({args.tile})")
    if not 1 <= args.quality <= 100:
        raise DLGSANetError(f"--quality must be between 1 and 100, got {args.quality}")
    if args.outscale is not None and (not math.isfinite(args.outscale) or args.outscale <= 0):
        raise DLGSANetError(f"--outscale must be a number > 0 (e.g. 2 or 1.5), got {args.outscale:g}")
    if args.size is not None:
        if args.width is not None or args.height is not None:
            raise DLGSANetError("give either --size WxH or --width/--height, not both")
        match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", args.size)
        if not match:
            raise DLGSANetError(f"--size must look like 1920x1080 (width x height in pixels), got {args.size!r}")
        args.width, args.height = int(match.group(1)), int(match.group(2))
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DLGSANetError(f"--{name} must be at least 1 pixel, got {value}")
    if args.outscale is not None and (args.width is not None or args.height is not None):
        raise DLGSANetError("give either --outscale or a size (--size/--width/--height), not both")
    if args.model is None:  # a bundled model: which one, decided (and checked) before any work
        try:
            args.model = str(bundled_model_path(args.scale or bundled_scale_for(args.outscale)))
        except CheckpointError as e:
            raise DLGSANetError(str(e).replace("pass a checkpoint file", "use --model with a checkpoint")) from None
    if getattr(args, "crf", None) is not None and not 0 <= args.crf <= 63:
        raise DLGSANetError(f"--crf must be between 0 (lossless) and 51 (63 for VP9), got {args.crf}")
    if getattr(args, "batch", None) is not None and args.batch < 1:
        raise DLGSANetError(f"--batch must be at least 1 frame, got {args.batch}")


def collect(inputs: list[str], recursive: bool) -> list[tuple[Path, Path]]:
    """(file, path relative to its root) for every image named directly or found in a folder."""
    found = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(f for f in p.glob(pattern) if f.is_file() and (is_image_file(f) or is_video_file(f)))
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            if not (is_image_file(p) or is_video_file(p)):
                raise DLGSANetError(f"{p} is not a PNG, JPEG or WebP image, nor a {WRITABLE_VIDEO} video")
            found.append((p, Path(p.name)))
        else:
            raise DLGSANetError(f"input not found: {p}")
    if not found:
        raise DLGSANetError(f"no PNG, JPEG or WebP images ({WRITABLE_VIDEO} videos) found in the inputs")
    return found


def _single_file_output(out: Path, count: int, fmt: str) -> bool:
    """True when ``-o`` names the one output file; False for a folder; errors for the rest."""
    suffix = out.suffix.lower()
    if out.is_dir():
        return False
    if suffix in UNWRITABLE_SUFFIXES:
        raise DLGSANetError(f"cannot write {suffix} files (-o {out}); give a folder, or a file name "
                            f"ending in {WRITABLE}")
    if out.exists() and (count > 1 or (suffix not in EXTENSIONS and suffix not in VIDEO_EXTENSIONS)):
        what = f"there are {count} input images" if count > 1 else f"{out.name} is not a {WRITABLE} name"
        raise DLGSANetError(f"-o {out} is an existing file, but {what}; give a folder for -o")
    if suffix in VIDEO_EXTENSIONS:
        if count > 1:
            raise DLGSANetError(f"-o {out} is a file name, but there are {count} inputs; "
                                f"give a folder for -o (it is created)")
        _check_folder_can_exist(out.parent)
        return True
    if suffix in EXTENSIONS:
        if count > 1:
            raise DLGSANetError(f"-o {out} is a file name, but there are {count} input images; "
                                f"give a folder for -o (it is created)")
        if fmt != "same" and EXTENSIONS[suffix] != EXTENSIONS["." + fmt]:
            raise DLGSANetError(f"--format {fmt} does not match -o {out.name}; drop one of them")
        _check_folder_can_exist(out.parent)
        return True
    _check_folder_can_exist(out)
    return False


def _check_folder_can_exist(folder: Path) -> None:
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise DLGSANetError(f"cannot create the output folder {folder}: {parent} is a file")
            return


def plan_outputs(args: argparse.Namespace, files: list[tuple[Path, Path]]) -> Plan:
    """Map every input to its output and apply --overwrite / --skip-existing (errors first)."""
    out = Path(args.output)
    single_file = _single_file_output(out, len(files), args.format)
    jobs, existing = [], []
    for src, rel in files:
        if single_file:
            dst = out
            if is_video_file(src) != is_video_file(out):
                kind, want = ("a video", WRITABLE_VIDEO) if is_video_file(src) else ("an image", WRITABLE)
                raise DLGSANetError(f"{src} is {kind}, but -o {out.name} is not a {want} name; "
                                    f"give a name ending in {want}, or a folder")
        elif is_video_file(src):  # videos keep their container; --format is for images
            dst = out / rel.with_name(rel.stem + args.suffix + src.suffix)
        else:
            suffix = src.suffix if args.format == "same" else "." + args.format
            dst = out / rel.with_name(rel.stem + args.suffix + suffix)
        if dst.resolve() == src.resolve():
            raise DLGSANetError(f"output {dst} would replace its input; choose another folder or --suffix")
        if dst.exists():
            if dst.is_dir():
                raise DLGSANetError(f"the output {dst} is an existing folder; choose another output")
            existing.append(dst)
        jobs.append(Job(src, dst))
    targets = [job.dst for job in jobs]
    if len(set(targets)) != len(targets):
        raise DLGSANetError("several inputs map to the same output file; use separate runs or --suffix")
    if existing and not (args.overwrite or args.skip_existing):
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise DLGSANetError(f"{existing[0]} already exists{more}; use --overwrite to replace, "
                            f"--skip-existing to keep and do the rest, or choose another output")
    skipped = existing if args.skip_existing else []
    jobs = [job for job in jobs if job.dst not in set(skipped)]
    videos = [job for job in jobs if is_video_file(job.src)]
    if videos:
        require_av()  # before the model is loaded: one line saying how to get PyAV
        if getattr(args, "codec", None):
            check_codec(args.codec)
    for job in jobs:
        if is_video_file(job.src):
            info = probe(job.src)
            job.size = None if info is None else (info.height, info.width)
        else:
            job.size = image_size(job.src)
    return Plan(jobs, skipped, out)
