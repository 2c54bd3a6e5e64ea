"""Scoring a model on HR images with the paper's protocol; used by ``dlgsanet eval`` and validation.

For every HR image (the benchmark protocol of BasicSR and the DLGSANet paper):

1. read it as 8-bit RGB (grey replicated, alpha dropped, EXIF orientation applied — what
   ``cv2.imread(..., IMREAD_COLOR)`` gives BasicSR);
2. crop it at the bottom/right to a multiple of the scale;
3. LR = MATLAB-style bicubic downscaling by 1/scale (antialiased), rounded to 8 bits, as the
   benchmark ``LR_bicubic`` PNGs were made;
4. SR = the model on LR/255, clamped and rounded to 8 bits as BasicSR's ``tensor2img``;
5. the bicubic baseline = MATLAB-style bicubic upscaling of the 8-bit LR, rounded to 8 bits;
6. PSNR and SSIM on the Y channel with ``crop_border = scale`` (:mod:`dlgsanet.metrics`);
   set means are plain averages of the per-image values, as BasicSR reports them.

API: :func:`evaluate_folder` (one call), or :func:`load_pairs` once and :func:`evaluate_pairs`
per validation round (so LR images are made only once). The result is an :class:`EvalReport`
(data only); ``dlgsanet.cli.eval`` turns it into the table, CSV and JSON.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .degradation import bicubic_degrade, imresize, mod_crop, quantize
from .errors import DLGSANetError, ImageInputError
from .images import IMAGE_SUFFIXES, list_images, read_rgb8
from .metrics import SSIM_WINDOW, psnr_y, ssim_y, to_uint8

ProgressFn = Callable[[int, int], None]
PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------
# images and the degradation
# ----------------------------------------------------------------------------------------------
def find_images(folder: PathLike, *, limit: Optional[int] = None) -> list[Path]:
    """HR image files in ``folder`` sorted by name (its ``HR/`` sub-folder for a benchmark root).

    ``Set5/`` and ``Set5/HR/`` are both accepted, since benchmark sets ship as ``<Set>/HR``.
    """
    root = Path(folder)
    if not root.exists():
        raise DLGSANetError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DLGSANetError(f"{root} is not a folder; --data takes a folder of HR images")
    files = list_images(root)
    if not files and (root / "HR").is_dir():
        files = list_images(root / "HR")
    if not files:
        raise DLGSANetError(f"no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) in {root}")
    if limit is not None:
        if limit < 1:
            raise DLGSANetError(f"limit must be at least 1, got {limit}")
        files = files[:limit]
    return files


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR input: antialiased MATLAB bicubic by 1/``scale`` of an 8-bit HR image, 8-bit out.

    Made by :func:`dlgsanet.degradation.bicubic_degrade`, the same call that makes the training
    pairs, so the model is scored on exactly the kind of input it was trained on.
    """
    chw = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1)))
    _, lr = bicubic_degrade(chw, scale)
    return lr.permute(1, 2, 0).numpy()


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: MATLAB bicubic by ``scale`` of an 8-bit LR image, 8-bit out (half up)."""
    chw = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).to(torch.float64) / 255.0
    return quantize(imresize(chw, float(scale))).permute(1, 2, 0).numpy()


def min_hr_side(scale: int) -> int:
    """Smallest HR side (after the crop to a multiple of ``scale``) that SSIM can score."""
    need = 2 * scale + SSIM_WINDOW
    return need + (-need) % scale


# ----------------------------------------------------------------------------------------------
# pairs
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalPair:
    """One test image: the HR (cropped to a multiple of the scale) and its 8-bit LR."""

    name: str
    hr: np.ndarray  # HxWx3 uint8 RGB
    lr: np.ndarray  # (H/scale)x(W/scale)x3 uint8 RGB
    scale: int


def make_pair(name: str, hr: np.ndarray, scale: int) -> EvalPair:
    """Crop ``hr`` (8-bit RGB) to a multiple of ``scale`` and make its LR image."""
    if scale < 1:
        raise DLGSANetError(f"scale must be a positive integer, got {scale}")
    hr = to_uint8(hr)
    if hr.shape[2] == 1:
        hr = np.repeat(hr, 3, axis=2)
    hr = np.ascontiguousarray(mod_crop(hr, scale))
    h, w = hr.shape[:2]
    need = min_hr_side(scale)
    if min(h, w) < need:
        raise ImageInputError(f"{name}: {w}x{h} is too small to score at x{scale} "
                              f"(needs at least {need}x{need}: {scale} border pixels are cropped "
                              f"and SSIM uses an {SSIM_WINDOW}x{SSIM_WINDOW} window); remove it from the folder")
    return EvalPair(name=name, hr=hr, lr=bicubic_downscale(hr, scale), scale=scale)


def iter_pairs(files: Sequence[PathLike], scale: int) -> Iterator[EvalPair]:
    """:func:`make_pair` for each file, read lazily (large sets never sit in memory at once)."""
    paths = [Path(f) for f in files]
    stems = [p.stem for p in paths]
    unique = len(set(stems)) == len(stems)  # a.png and a.jpg side by side: use full names
    for p in paths:
        yield make_pair(p.stem if unique else p.name, read_rgb8(p).permute(1, 2, 0).numpy(), scale)


def load_pairs(folder: PathLike, scale: int, *, limit: Optional[int] = None) -> list[EvalPair]:
    """All pairs of a folder in memory: for validation that scores the same set many times."""
    return list(iter_pairs(find_images(folder, limit=limit), scale))


def check_files(files: Sequence[Path], scale: int) -> None:
    """Fail before any model work if a file is not an image or is too small (headers only)."""
    from PIL import Image, UnidentifiedImageError

    need = min_hr_side(scale)
    for f in files:
        try:
            with Image.open(f) as im:
                w, h = im.size
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ImageInputError(f"cannot read {f}: not a supported image or the file is damaged "
                                  f"({e}); remove it from the folder") from None
        if min(w - w % scale, h - h % scale) < need:
            raise ImageInputError(f"{f.name}: {w}x{h} is too small to score at x{scale} (needs at least "
                                  f"{need}x{need}); remove it from the folder")


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageScore:
    """Scores of one image. ``bicubic_*`` are None when the baseline was not computed."""

    name: str
    width: int   # HR width after the crop to a multiple of the scale
    height: int
    psnr: float
    ssim: float
    bicubic_psnr: Optional[float]
    bicubic_ssim: Optional[float]
    seconds: float  # model time for this image (LR on the device to 8-bit SR back on the host)
    tiles: int = 1  # > 1 when memory forced (or --tile asked for) tiled inference


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return float(sum(vals) / len(vals))  # type: ignore[arg-type]


@dataclass
class EvalReport:
    """Per-image and mean PSNR/SSIM of a model (and bicubic) on one set, plus how they were made."""

    scale: int
    images: list[ImageScore]
    data: str = ""
    model: str = ""
    device: str = ""

    @property
    def crop_border(self) -> int:
        return self.scale

    @property
    def psnr(self) -> Optional[float]:
        """Mean PSNR of the model (dB, Y channel)."""
        return _mean(s.psnr for s in self.images)

    @property
    def ssim(self) -> Optional[float]:
        return _mean(s.ssim for s in self.images)

    @property
    def bicubic_psnr(self) -> Optional[float]:
        return _mean(s.bicubic_psnr for s in self.images)

    @property
    def bicubic_ssim(self) -> Optional[float]:
        return _mean(s.bicubic_ssim for s in self.images)

    @property
    def seconds(self) -> float:
        return float(sum(s.seconds for s in self.images))

    def protocol(self) -> dict[str, Any]:
        """How the numbers were made, in words (written into the JSON report)."""
        s = self.scale
        return {
            "metric": "PSNR and SSIM on the Y channel of YCbCr (ITU-R BT.601, 16-235), 8-bit images",
            "crop_border": s,
            "ssim_window": f"{SSIM_WINDOW}x{SSIM_WINDOW} Gaussian, sigma 1.5, valid region",
            "hr": f"cropped at bottom/right to a multiple of {s}",
            "lr": f"MATLAB-style bicubic x1/{s} (antialiased) of the HR, rounded to 8 bits",
            "sr": "model output clamped to 0..1, x255, rounded to 8 bits (BasicSR tensor2img)",
            "bicubic": f"MATLAB-style bicubic x{s} of the 8-bit LR, rounded to 8 bits",
            "mean": "arithmetic mean of the per-image values",
        }


# ----------------------------------------------------------------------------------------------
# running a model
# ----------------------------------------------------------------------------------------------
def super_resolve(model: torch.nn.Module, lr: np.ndarray, *, tile_size: Optional[int] = None,
                  overlap: Optional[int] = None) -> tuple[np.ndarray, int]:
    """(the model's 8-bit RGB output, tiles used) for an 8-bit RGB LR image.

    Runs through :func:`dlgsanet.upscale` (whole image when it fits in memory, as the paper's
    test code does; tiles otherwise) with ``border="official"`` (no border padding, so scores
    compare with published ones) and quantises with :func:`dlgsanet.metrics.to_uint8`.
    """
    from .inference import upscale

    tiles = [1]

    def count(done: int, total: int) -> None:
        tiles[0] = total

    x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float().div_(255.0)[None]
    out = upscale(model, x, tile_size=tile_size, overlap=overlap, progress=count, border="official")
    return to_uint8(out.float()), tiles[0]


def evaluate_pairs(model: torch.nn.Module, pairs: Iterable[EvalPair], *, bicubic: bool = True,
                   tile_size: Optional[int] = None, overlap: Optional[int] = None,
                   progress: Optional[ProgressFn] = None, total: Optional[int] = None,
                   data: str = "", model_name: str = "") -> EvalReport:
    """Score ``model`` on ``pairs`` (see :func:`load_pairs`); the model is run in eval mode.

    The model's train/eval mode is restored afterwards, so a training loop can call this on
    its (EMA) network mid-run. ``progress(done, total)`` is called after each image.
    """
    model_scale = getattr(model, "scale", None)
    set_scale: Optional[int] = None
    was_training = model.training
    model.eval()
    scores: list[ImageScore] = []
    if total is None and hasattr(pairs, "__len__"):
        total = len(pairs)  # type: ignore[arg-type]
    try:
        for pair in pairs:
            if model_scale is not None and pair.scale != model_scale:
                raise DLGSANetError(f"{pair.name}: the pair was made for x{pair.scale} but the model is "
                                    f"x{model_scale}")
            if set_scale is not None and pair.scale != set_scale:
                raise DLGSANetError(f"{pair.name}: pairs of different scales (x{set_scale}, x{pair.scale}) "
                                    f"cannot be averaged together")
            set_scale = pair.scale
            start = time.perf_counter()
            sr, tiles = super_resolve(model, pair.lr, tile_size=tile_size, overlap=overlap)
            seconds = time.perf_counter() - start
            if sr.shape != pair.hr.shape:
                raise DLGSANetError(f"{pair.name}: the model returned {sr.shape[1]}x{sr.shape[0]} for an "
                                    f"LR of {pair.lr.shape[1]}x{pair.lr.shape[0]}; expected "
                                    f"{pair.hr.shape[1]}x{pair.hr.shape[0]}")
            b_psnr = b_ssim = None
            if bicubic:
                up = bicubic_upscale(pair.lr, pair.scale)
                b_psnr, b_ssim = psnr_y(up, pair.hr, pair.scale), ssim_y(up, pair.hr, pair.scale)
            scores.append(ImageScore(name=pair.name, width=pair.hr.shape[1], height=pair.hr.shape[0],
                                     psnr=psnr_y(sr, pair.hr, pair.scale), ssim=ssim_y(sr, pair.hr, pair.scale),
                                     bicubic_psnr=b_psnr, bicubic_ssim=b_ssim, seconds=seconds, tiles=tiles))
            if progress is not None:
                progress(len(scores), total if total is not None else len(scores))
    finally:
        model.train(was_training)
    if not scores or set_scale is None:
        raise DLGSANetError("nothing to evaluate: no image pairs were given")
    return EvalReport(scale=set_scale, images=scores, data=data, model=model_name,
                      device=str(_device_of(model)))


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def evaluate_folder(model: torch.nn.Module, folder: PathLike, *, scale: Optional[int] = None,
                    limit: Optional[int] = None, bicubic: bool = True, tile_size: Optional[int] = None,
                    overlap: Optional[int] = None, progress: Optional[ProgressFn] = None,
                    model_name: str = "") -> EvalReport:
    """Score ``model`` on the HR images of ``folder`` (paper protocol, see the module docstring).

    ``scale`` defaults to the model's; giving a different one is an error (an x4 network
    cannot be scored at x2). Unreadable or too-small images stop the run before any model
    work, so a mean always covers the whole set.
    """
    model_scale = int(getattr(model, "scale", 0) or 0)
    if scale is None:
        if not model_scale:
            raise DLGSANetError("the model does not say its scale; pass scale=")
        scale = model_scale
    elif model_scale and scale != model_scale:
        raise DLGSANetError(f"the model upscales x{model_scale}; it cannot be evaluated at x{scale}")
    files = find_images(folder, limit=limit)
    check_files(files, scale)
    return evaluate_pairs(model, iter_pairs(files, scale), bicubic=bicubic, tile_size=tile_size,
                          overlap=overlap, progress=progress, total=len(files),
                          data=set_name(folder), model_name=model_name)


def set_name(folder: PathLike) -> str:
    """A readable name for an image set: ``Set5`` for both ``.../Set5`` and ``.../Set5/HR``."""
    p = Path(folder).resolve()
    return p.parent.name if p.name.lower() == "hr" and p.parent.name else (p.name or str(p))
