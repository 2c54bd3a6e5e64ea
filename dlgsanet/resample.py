"""Output sizes other than the model's own scale: model passes, then antialiased resampling.

The network only knows its integer scale, so any other size (Real-ESRGAN's ``--outscale``,
A1111's "Scale by", a target width) runs the network as many times as needed to reach at least
the target, then resamples to the exact size:

- the filter is antialiased bicubic (Pillow's BICUBIC kernel, a = -0.5, widened by the
  reduction factor when shrinking, so a downscale averages areas instead of aliasing; torch's
  ``antialias=True`` computes the same weights as Pillow, tests/test_resample.py checks it);
- between two passes the image is first resized to target / scale: x8 from a x4 model runs the
  second pass on 2x the input instead of 4x (a quarter of the work and memory), and that pass
  sees an antialiased downscale, like the model's training inputs, not raw model output;
- everything stays float (16-bit images keep their precision) and is clamped to 0..1;
- colour with alpha is resampled premultiplied (as Pillow does for RGBA), so the colour of
  fully transparent pixels never bleeds into visible ones; alpha uses the same filter.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .alpha import upscale_rgba
from .errors import ImageInputError, OutputSizeError
from .tiling.settings import split_keywords

Progress = Callable[[int, int], None]
PassRunner = Callable[[torch.Tensor, Optional[Progress]], torch.Tensor]

#: Below this alpha (after resampling) colour is taken from the straight resample: dividing a
#: premultiplied value by a near-zero alpha only amplifies rounding noise.
_MIN_ALPHA = 1.0 / 1024


def _round(x: float) -> int:
    return max(1, int(math.floor(x + 0.5)))


def target_size(height: int, width: int, *, outscale: Optional[float] = None,
                width_to: Optional[int] = None, height_to: Optional[int] = None) -> tuple[int, int]:
    """(height, width) of the output for a factor, or to fit ``width_to`` x ``height_to``.

    ``outscale``: any factor > 0 (rounded to whole pixels). ``width_to``/``height_to``: one of
    them sets that side and keeps the aspect ratio; both fit the image inside the box.
    """
    if outscale is not None:
        if width_to is not None or height_to is not None:
            raise OutputSizeError("give either an output scale or an output width/height, not both")
        if isinstance(outscale, bool) or not isinstance(outscale, (int, float)) \
                or not math.isfinite(outscale) or outscale <= 0:
            raise OutputSizeError(f"the output scale must be a number > 0, got {outscale!r}")
        return _round(height * outscale), _round(width * outscale)
    for name, value in (("width", width_to), ("height", height_to)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise OutputSizeError(f"the output {name} must be a whole number of pixels >= 1, got {value!r}")
    if width_to is None and height_to is None:
        raise OutputSizeError("give an output scale, width or height")
    fx = math.inf if width_to is None else width_to / width
    fy = math.inf if height_to is None else height_to / height
    if fx <= fy:
        return min(_round(height * fx), height_to or math.inf), width_to
    return height_to, min(_round(width * fy), width_to or math.inf)


def pass_sizes(height: int, width: int, target: tuple[int, int], scale: int) -> list[tuple[int, int]]:
    """Input (height, width) of each model pass that reaches ``target`` from an image of this size.

    At least one pass; more while the output would be smaller than the target. Before pass k of
    p (k > 1) the image is resized to ceil(target / scale^(p-k+1)), never larger than it is.
    """
    th, tw = target
    passes = 1
    while height * scale ** passes < th or width * scale ** passes < tw:
        passes += 1
    sizes = [(height, width)]
    for k in range(1, passes):
        div = scale ** (passes - k)
        sizes.append((math.ceil(th / div), math.ceil(tw / div)))
    return sizes


def resize(images: torch.Tensor, size: Sequence[int], *, has_alpha: bool = False) -> torch.Tensor:
    """[B,C,H,W] float in 0..1 -> [B,C,h,w] float32 (antialiased bicubic), clamped to 0..1.

    ``has_alpha``: the last channel is straight alpha; colour is resampled premultiplied.
    The same tensor comes back when it already has the size.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[-2:]) == size:
        return images

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)

    x = images.float()
    if not has_alpha:
        return filt(x).clamp_(0, 1)
    alpha = x[:, -1:]
    out = filt(torch.cat([x[:, :-1] * alpha, alpha], 1))
    a = out[:, -1:].clamp_(0, 1)
    colour = (out[:, :-1] / a.clamp(min=_MIN_ALPHA)).clamp_(0, 1)
    colour = torch.where(a >= _MIN_ALPHA, colour, filt(x[:, :-1]).clamp_(0, 1))
    return torch.cat([colour, a], 1)


def upscale_to(run_pass: PassRunner, images: torch.Tensor, target: tuple[int, int], *, scale: int,
               has_alpha: bool = False, progress: Optional[Progress] = None) -> torch.Tensor:
    """Model passes (``run_pass(x, progress) -> [B,C,scale*h,scale*w]``) and resampling to ``target``.

    ``progress(done, total)``: with one pass, the pass's own calls (tiles); with several, input
    pixels of all passes (the total is known before the first tile). The result is float32,
    or the model output itself when its size is already the target.
    """
    b = images.shape[0]
    sizes = pass_sizes(images.shape[-2], images.shape[-1], target, scale)
    weights = [b * h * w for h, w in sizes]
    total = sum(weights)
    x = images
    for k, size in enumerate(sizes):
        x = resize(x, size, has_alpha=has_alpha)
        x = run_pass(x, _pass_progress(progress, sum(weights[:k]), weights[k], total, len(sizes)))
    return resize(x, target, has_alpha=has_alpha)


def _pass_progress(progress: Optional[Progress], offset: int, weight: int, total: int,
                   passes: int) -> Optional[Progress]:
    if progress is None or passes == 1:
        return progress

    def report(done: int, of: int) -> None:
        progress(offset + weight * done // max(of, 1), total)

    return report


def to_output(x: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Float 0..1 -> ``dtype`` on ``device`` (uint8: 0..255 rounded), as ``upscale`` returns it."""
    x = x.clamp(0, 1)
    if dtype == torch.uint8:
        x = x.mul(255).round_()
    return x.to(device=device, dtype=dtype)


def upscale_by(run_pass: PassRunner, images: torch.Tensor, outscale: float, *, scale: int,
               progress: Optional[Progress] = None, out: Optional[torch.Tensor] = None,
               output_dtype: Optional[torch.dtype] = None,
               output_device: Optional[torch.device] = None) -> torch.Tensor:
    """``dlgsanet.upscale(..., outscale=)``: [B,3,H,W] -> [B,3,round(H*outscale),round(W*outscale)]."""
    if out is not None:
        raise ImageInputError("out cannot be combined with outscale (the output has another size); "
                              "use output_dtype/output_device")
    dtype = images.dtype if output_dtype is None else output_dtype
    if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype == torch.uint8):
        raise ImageInputError(f"output_dtype must be a float dtype or torch.uint8, got {output_dtype}")
    target = target_size(images.shape[-2], images.shape[-1], outscale=outscale)
    y = upscale_to(run_pass, images, target, scale=scale, progress=progress)
    return to_output(y, dtype, images.device if output_device is None else torch.device(output_device))


def upscale_rgba_to(model: torch.nn.Module, images: torch.Tensor, *, outscale: Optional[float] = None,
                    width: Optional[int] = None, height: Optional[int] = None,
                    channels_last: bool = False, progress: Optional[Progress] = None,
                    output_dtype: Optional[torch.dtype] = None,
                    output_device: Optional[torch.device] = None, **kwargs) -> torch.Tensor:
    """:func:`dlgsanet.upscale_rgba` to any size: ``outscale`` (e.g. 1.5, or 8 from a x4 model),
    or ``width``/``height`` (fit, aspect kept). Same layouts, alpha modes and keywords as
    ``upscale_rgba``; the result has the target size (the same for every image of the batch).
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ImageInputError(f"expected images as a 4-D tensor ([B,C,H,W], or [B,H,W,C] with "
                              f"channels_last=True), got {shape}")
    x = images.movedim(-1, 1) if channels_last else images
    scale = getattr(model, "scale", None)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise OutputSizeError(f"the model has no usable integer 'scale' attribute (got {scale!r})")
    target = target_size(x.shape[-2], x.shape[-1], outscale=outscale, width_to=width, height_to=height)
    tiles, others = split_keywords(kwargs)  # the same TileSettings for every pass

    def run_pass(t: torch.Tensor, p: Optional[Progress]) -> torch.Tensor:
        return upscale_rgba(model, t, progress=p, tiles=tiles, **others)

    y = upscale_to(run_pass, x, target, scale=scale, has_alpha=x.shape[1] == 4, progress=progress)
    y = to_output(y, images.dtype if output_dtype is None else output_dtype,
                  images.device if output_device is None else torch.device(output_device))
    return y.movedim(1, -1) if channels_last else y
