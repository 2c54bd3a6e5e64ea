"""Image files: which suffixes count, listing a folder, reading and writing, without losing what the user had.

One decoder (:func:`read_image`): RGBA keeps its alpha, grayscale stays grayscale, 16-bit PNG
is read and written at 16 bits (Pillow truncates 16-bit colour and grey+alpha PNGs to 8 bits,
so those are read through pypng or OpenCV, and every 16-bit PNG is written by
``_write_png16``), EXIF orientation is applied, and the ICC profile is carried over.
Training and evaluation want plain 8-bit RGB; :func:`read_rgb8` gives that from the same
decoder, so both see exactly the pixels the upscale command sees. Outputs appear only
complete (temporary file, rename).
"""
from __future__ import annotations

import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import ImageInputError

#: Suffixes the upscale command reads and writes, with the Pillow format each is written in.
EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
#: Suffixes read as training/evaluation images (what Pillow decodes and the benchmark sets come in).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Other image formats' suffixes, which we cannot write: ``-o x.tiff`` is refused, not made a folder.
UNWRITABLE_SUFFIXES = frozenset({".tif", ".tiff", ".bmp", ".gif", ".avif", ".heic", ".heif", ".jxl", ".jp2",
                                 ".tga", ".exr", ".hdr", ".ico", ".ppm", ".pgm", ".pnm", ".psd", ".dds", ".qoi"})


@dataclass
class LoadedImage:
    """An image as the model sees it (RGB float 0..1) plus what is needed to write it back."""

    rgb: torch.Tensor                    # [3, H, W] float32 in 0..1 (grayscale replicated)
    alpha: Optional[torch.Tensor]        # [1, H, W] float32 in 0..1, or None
    grayscale: bool
    bit_depth: int                       # 8 or 16
    icc_profile: Optional[bytes] = None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS


def list_images(folder: os.PathLike | str) -> list[Path]:
    """The image files (:data:`IMAGE_SUFFIXES`) directly inside ``folder``, sorted by name so
    runs are reproducible; hidden files (``.name``, e.g. macOS ``._x.png``) are skipped."""
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith(".")), key=lambda p: p.name)


def image_size(path: Path) -> Optional[tuple[int, int]]:
    """(height, width) as :func:`read_image` will return it (EXIF rotation applied), from the
    file's header without decoding; None when it cannot be read (reported when read for real)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            rotated = im.getexif().get(0x0112) in (5, 6, 7, 8)  # orientations that swap the sides
    except Exception:  # noqa: BLE001 - any failure here is reported by read_image later
        return None
    return (w, h) if rotated else (h, w)


def _png_header(path: Path) -> Optional[tuple[int, int]]:
    """(bit depth, colour type) of a PNG file, or None when it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24], head[25]


def _read_png16(path: Path, colour_type: int) -> np.ndarray:
    """A 16-bit grey+alpha/RGB/RGBA PNG as uint16 HxWxC (OpenCV when present for colour, else pypng)."""
    try:
        if colour_type == 4:
            raise ImportError  # OpenCV turns grey+alpha into BGRA; pypng keeps the two planes
        import cv2  # type: ignore

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is not None:
            return arr[..., [2, 1, 0, 3][: arr.shape[2]]] if arr.ndim == 3 else arr[..., None]
    except ImportError:
        pass
    try:
        import png  # type: ignore  (pypng)
    except ImportError:
        raise ImageInputError(f"{path.name} is a 16-bit PNG with colour or alpha; reading it without clipping needs "
                              f"'pypng' or 'opencv-python' (pip install pypng)") from None
    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        planes = info["planes"]
        return np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, planes)
    except Exception as e:  # noqa: BLE001 - pypng's own errors (FormatError, ChunkError, zlib)
        raise ImageInputError(f"cannot read {path}: the file is damaged or truncated ({e})") from None


def read_image(path: os.PathLike | str) -> LoadedImage:
    """Decode ``path`` (PNG, JPEG, WebP) into a :class:`LoadedImage`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageInputError(f"cannot read {path}: the file is empty (0 bytes), not an image")
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            icc = im.info.get("icc_profile")
            header = _png_header(path)
            if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
                arr = _read_png16(path, header[1]).astype(np.float32) / 65535.0
                bit_depth, gray = 16, header[1] == 4
            elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)[..., None] / 65535.0
                bit_depth, gray = 16, True
            else:
                gray = im.mode in ("L", "LA", "1") or (im.mode == "P" and _palette_is_gray(im))
                has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
                target = ("LA" if has_alpha else "L") if gray else ("RGBA" if has_alpha else "RGB")
                arr = np.asarray(im.convert(target), dtype=np.float32) / 255.0
                bit_depth = 8
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise ImageInputError(f"cannot read {path}: not a PNG, JPEG or WebP image (or its start is "
                              f"damaged)") from None
    except Image.DecompressionBombError as e:
        raise ImageInputError(f"cannot read {path}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"cannot read {path}: the file is damaged or truncated ({e})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    channels = arr.shape[2]
    color = arr[..., :3] if channels >= 3 else np.repeat(arr[..., :1], 3, axis=2)
    alpha = arr[..., -1:] if channels in (2, 4) else None
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # noqa: E731
    return LoadedImage(rgb=to_t(color), alpha=None if alpha is None else to_t(alpha),
                       grayscale=gray, bit_depth=bit_depth, icc_profile=icc)


def read_rgb8(path: os.PathLike | str) -> torch.Tensor:
    """An image file as 8-bit RGB ``[3, H, W]`` uint8 (grey replicated, alpha dropped, 16 bits
    rounded to 8): what ``cv2.imread(..., IMREAD_COLOR)`` gives BasicSR for training and scoring."""
    return torch.from_numpy(_quantise(read_image(path).rgb, 8))


def _palette_is_gray(im) -> bool:
    pal = im.getpalette() or []
    triples = [pal[i:i + 3] for i in range(0, len(pal), 3)]
    return all(r == g == b for r, g, b in triples)


def _quantise(x: torch.Tensor, bit_depth: int) -> np.ndarray:
    top = 65535.0 if bit_depth == 16 else 255.0
    arr = (x.detach().float().clamp(0, 1) * top).round().cpu().numpy()
    return arr.astype(np.uint16 if bit_depth == 16 else np.uint8)


def write_image(path: os.PathLike | str, rgb: torch.Tensor, alpha: Optional[torch.Tensor] = None, *,
                grayscale: bool = False, bit_depth: int = 8, icc_profile: Optional[bytes] = None,
                quality: int = 95, lossless: bool = False, overwrite: bool = False) -> Path:
    """Encode [3,H,W] ``rgb`` (float 0..1, or uint8) and optional [1,H,W] ``alpha`` to ``path``.

    The format follows the suffix; 16 bits are kept for PNG only; JPEG drops alpha (callers
    warn, :func:`lost_on_write`). ``quality`` (1-100) applies to JPEG and lossy WebP,
    ``lossless`` to WebP. Refuses to replace an existing file unless ``overwrite``; writes a
    temporary file beside it and renames it, so an interrupted write never leaves a
    half-written image under the real name.
    """
    path = Path(path)
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ImageInputError(f"cannot write {path.name}: use .png, .jpg, .jpeg or .webp")
    if path.exists() and not overwrite:
        raise ImageInputError(f"{path} already exists (use --overwrite to replace it)")
    if fmt != "PNG":
        bit_depth = 8
    if rgb.dtype == torch.uint8:
        rgb = rgb.float() / 255.0
    planes = [rgb.float().mean(0, keepdim=True)] if grayscale else [rgb]
    if alpha is not None and fmt != "JPEG":  # JPEG has no alpha channel
        planes.append(alpha.float() / (255.0 if alpha.dtype == torch.uint8 else 1.0))
    arr = _quantise(torch.cat(planes, 0), bit_depth).transpose(1, 2, 0)
    # A unique name beside the target (same file system: the rename is atomic); created by the
    # encoder with the usual permissions, unlike mkstemp's owner-only file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        if bit_depth == 16:
            _write_png16(tmp, arr, icc_profile)
        else:
            _pillow_image(arr).save(tmp, format=fmt, **_save_options(fmt, icc_profile, quality, lossless))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def lost_on_write(path: os.PathLike | str, has_alpha: bool, bit_depth: int) -> list[str]:
    """What writing an image with these properties to ``path`` throws away (for a warning)."""
    fmt = EXTENSIONS.get(Path(path).suffix.lower())
    lost = []
    if has_alpha and fmt == "JPEG":
        lost.append("transparency (JPEG has no alpha channel)")
    if bit_depth == 16 and fmt in ("JPEG", "WEBP"):
        lost.append(f"16-bit depth ({fmt} stores 8 bits)")
    return lost


def _pillow_image(arr: np.ndarray):
    """uint8 HxWxC -> PIL image; ``frombytes`` with an explicit mode works on every Pillow
    (``fromarray(mode=...)`` is deprecated in 11.3 and fails in 13)."""
    from PIL import Image

    h, w, c = arr.shape
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    return Image.frombytes(mode, (w, h), np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def _save_options(fmt: str, icc_profile: Optional[bytes], quality: int, lossless: bool) -> dict:
    options: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "JPEG":
        options["quality"] = quality
    elif fmt == "WEBP" and lossless:
        options.update(lossless=True, quality=100)  # quality = effort when lossless
    elif fmt == "WEBP":
        options["quality"] = quality
    return options


def _write_png16(path: Path, arr: np.ndarray, icc_profile: Optional[bytes] = None) -> None:
    """16-bit grey / grey+alpha / RGB / RGBA PNG with its ICC profile (Pillow cannot write the
    multi-channel ones, and its 16-bit grey path depends on deprecated array modes)."""
    import zlib

    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = np.zeros((h, 1 + w * c * 2), dtype=np.uint8)
    raw[:, 1:] = arr.astype(">u2").reshape(h, -1).view(np.uint8)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)))
        if icc_profile:
            f.write(chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
        f.write(chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)))
        f.write(chunk(b"IEND", b""))
