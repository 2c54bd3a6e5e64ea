"""The one helper every front end with alpha uses: split RGBA, upscale, re-attach.

The network is RGB only. Colour goes through :func:`dlgsanet.upscale` (tiled, cancellable);
alpha is upscaled separately, by default with bicubic interpolation, which keeps flat alpha
exactly flat (0 stays 0, 1 stays 1) where the network leaves a haze over transparent areas and
a see-through subject, and costs no second pass. ``alpha="model"`` (alpha replicated to 3
channels, run through the network, channels averaged) has the better edges, for masks whose
edges matter more than exact flats. Figures in docs/tiling.md ("Alpha").

Colour is treated as straight (not premultiplied) alpha, as PNG stores it and as ComfyUI and
A1111 pass it. Alpha is resized in strips, so its working memory is bounded like the tiles'.
"""
from __future__ import annotations

import traceback
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .errors import ImageInputError, UpscaleCancelled
from .inference import upscale
from .tiling.engine import run_tiled
from .tiling.settings import split_keywords

ALPHA_MODES = ("bicubic", "model")
#: Input rows per bicubic strip (plus a 2-row halo each side, which makes strips exact).
_STRIP_ROWS = 64
_HALO = 2


def _to_bchw(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        layout = "[B,H,W,C]" if channels_last else "[B,C,H,W]"
        raise ImageInputError(f"expected images as a {layout} tensor with C = 3 or 4, got {shape}")
    x = images.movedim(-1, 1) if channels_last else images
    if x.shape[1] not in (3, 4):
        layout = "[B,H,W,C]" if channels_last else "[B,C,H,W]"
        hint = "" if channels_last else " (pass channels_last=True for [B,H,W,C] images)"
        raise ImageInputError(f"expected {layout} images with C = 3 (RGB) or 4 (RGBA), got "
                              f"{tuple(images.shape)}{hint}")
    if not x.dtype.is_floating_point:
        raise ImageInputError(f"expected float images in 0..1, got dtype {x.dtype}")
    return x


def resize_alpha_bicubic(alpha: torch.Tensor, scale: int, out: torch.Tensor,
                         cancel: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """Bicubic x``scale`` of ``alpha`` [B,1,H,W] into ``out`` [B,1,sH,sW] (any dtype/device), clamped.

    Works in strips of input rows with a halo, which gives exactly the whole-image result
    (bicubic reads 2 source rows either side) with memory bounded by the strip.
    """
    b, _, h, w = alpha.shape
    for y0 in range(0, h, _STRIP_ROWS):
        if cancel is not None and cancel():
            raise UpscaleCancelled("upscale cancelled")
        y1 = min(h, y0 + _STRIP_ROWS)
        a0, a1 = max(0, y0 - _HALO), min(h, y1 + _HALO)
        src = alpha[:, :, a0:a1].to(out.device, torch.float32)
        up = F.interpolate(src, size=((a1 - a0) * scale, w * scale), mode="bicubic", align_corners=False)
        up = up[:, :, (y0 - a0) * scale:(y1 - a0) * scale].clamp_(0, 1)
        if out.dtype == torch.uint8:
            up = up.mul_(255).round_()
        out[:, :, y0 * scale:y1 * scale].copy_(up)
    return out


def upscale_rgba(model: torch.nn.Module, images: torch.Tensor, *, channels_last: bool = False,
                 alpha: str = "bicubic", output_dtype: Optional[torch.dtype] = None,
                 output_device: Optional[torch.device] = None,
                 progress: Optional[Callable[[int, int], None]] = None,
                 cancel: Optional[Callable[[], bool]] = None, **upscale_kwargs) -> torch.Tensor:
    """Upscale RGB or RGBA images; alpha (if any) is upscaled separately and re-attached.

    ``images``: float 0..1, ``[B,C,H,W]`` or with ``channels_last=True`` ``[B,H,W,C]`` (ComfyUI's
    IMAGE), C = 3 or 4. Returns the same layout and channel count, ``scale`` times larger.
    ``alpha``: "bicubic" (default) or "model". Other keywords (``tiles=``, or tile_size,
    overlap, ...; runner, oom_types) are :func:`dlgsanet.upscale`'s; one ``TileSettings`` made
    from them serves the colour and a network alpha pass alike (the mirror padding included);
    ``progress``/``cancel`` cover both passes.
    """
    if alpha not in ALPHA_MODES:
        raise ImageInputError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
    x = _to_bchw(images, channels_last)
    scale = getattr(model, "scale", None)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ImageInputError(f"the model has no usable integer 'scale' attribute (got {scale!r})")
    out_dtype = x.dtype if output_dtype is None else output_dtype
    out_device = x.device if output_device is None else torch.device(output_device)
    tiles, others = split_keywords(upscale_kwargs)  # one TileSettings for both passes
    b, c, h, w = x.shape
    passes = 2 if c == 4 and alpha == "model" else 1
    first_total = [0]

    def rgb_progress(done: int, total: int) -> None:
        first_total[0] = total
        if progress is not None:
            progress(done, total * passes)

    def alpha_progress(done: int, total: int) -> None:
        if progress is not None and done > 0:  # its start is the colour pass's end, said already
            progress(first_total[0] + done, first_total[0] + total)

    out: Optional[torch.Tensor] = None
    try:
        # One buffer in the caller's layout; both passes write into views of it.
        shape = (b, h * scale, w * scale, c) if channels_last else (b, c, h * scale, w * scale)
        out = torch.empty(shape, dtype=out_dtype, device=out_device)
        view = out.movedim(-1, 1) if channels_last else out  # [B,C,sH,sW] either way
        upscale(model, x[:, :3], out=view[:, :3], progress=rgb_progress, cancel=cancel, tiles=tiles,
                **others)
        if c == 4 and alpha == "model":
            run_tiled(model, x[:, 3:4], tiles, out_channels=1, out=view[:, 3:4], progress=alpha_progress,
                      cancel=cancel, runner=_alpha_runner(others.get("runner") or model),
                      oom_types=others.get("oom_types", ()))
        elif c == 4:
            resize_alpha_bicubic(x[:, 3:4], scale, view[:, 3:4], cancel=cancel)
        result, out = out, None
        return result
    except BaseException as exc:
        out = view = None  # release the unfinished buffer even while the caller holds the exception
        traceback.clear_frames(exc.__traceback__)
        raise


def _alpha_runner(base) -> Callable[[torch.Tensor], torch.Tensor]:
    """What runs an alpha tile: alpha replicated to RGB through ``base``, channels averaged back."""

    def alpha_runner(tile: torch.Tensor) -> torch.Tensor:
        return base(tile.expand(-1, 3, -1, -1)).mean(1, keepdim=True)

    return alpha_runner
