"""Inference entry point shared by the CLI, the ComfyUI nodes and the A1111 upscaler.

``upscale`` runs the whole image at once when it fits in memory and no tile size was asked
for; otherwise it cuts the image into overlapping tiles (``tiling.py``) and blends their
outputs with smooth weights that sum to 1.

How memory stays bounded: tiles are visited row by row (column by column for landscape
images, so the row below is always the shorter side) and each output pixel is written once,
as soon as the last tile covering it is done. Until then its partial sum lives in one of two
float32 buffers: ``left`` (the overlap with the next tile of the same row; tile-sized) and
``carry`` (the overlap with the next row of tiles; shorter image side x overlap). Beyond the
output itself, memory is therefore one tile's forward pass plus a thin band, whatever the
image size, and the output may be uint8 (a quarter of float32) because no pixel is ever
revisited.

Why tiles can match the whole image closely: the global attention runs on TLC windows whose
layout depends on the size of the map it sees, so a tile run as an independent image attends
over different windows than the whole image, and its output differs everywhere, not only near
its edges. Each tile therefore runs inside ``tlc.tlc_frame``, which gives it the whole image's
windows (those crossing its edge shifted inside it); what remains differs only near tile edges,
where the overlap's blending weights are small or zero.

Why the image is padded (``border``): the network's convolutions pad with zeros, and its input
is shifted by the dataset's mean colour, so at an image border it sees a frame of that grey
mean, and border pixels are pulled towards it: with the bundled model the outermost pixels of
flat colours drift by up to 47 levels (of 255) and a 1x1 image changes colour. By default
(``border="mirror"``) the engine therefore upscales the image mirrored outwards by
``BORDER_PAD`` pixels on every side and keeps only the image's own part of the output. Tiles are planned over that padded image, so only tiles touching the border carry
padding (an interior tile's edges already have real context) and tiled output still matches the
untiled one. ``border="official"`` runs the image as it is, exactly as ``model(x)`` and the
official test code do. Figures in docs/tiling.md ("Image borders").

Why out-of-memory handling looks like this: on CUDA an OOM is recoverable. A failure on the
very first tile re-plans the image with half the tile size (nothing is lost); a failure later
keeps the finished work and computes each remaining tile in sub-tiles of the reduced size, so
the plan, the blending and the progress total stay as announced. Cancellation (ours or the
host's own BaseException) always passes through, and every buffer is released on the way out.
"""
from __future__ import annotations

import traceback
from contextlib import nullcontext
from typing import Callable, Optional, Sequence

import torch

from .errors import (DLGSANetError, ImageInputError, TileOutOfMemoryError, TileSettingsError,
                     UpscaleCancelled)
from .memory import auto_tile_size
from .tlc import tlc_frame
from .tiling import (DEFAULT_OVERLAP, DEFAULT_RAMP, MIN_TILE_SIZE, TilePlan,
                     axis_weights, check_settings, mirror_index, plan_tiles)

Runner = Callable[[torch.Tensor], torch.Tensor]
OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8)
#: ``border`` values: "mirror" pads the image by mirroring (the engine's default, right colours
#: at the border); "official" runs it unpadded, bit for bit what ``model(x)`` gives.
BORDER_MODES = ("mirror", "official")
DEFAULT_BORDER = "mirror"
#: Input pixels mirrored onto each side with ``border="mirror"`` (measured: 8 brings flat colours
#: within 1 level of 255 at the border, from 47; more gains nothing; docs/tiling.md).
BORDER_PAD = 8


def is_out_of_memory(exc: BaseException, oom_types: Sequence[type] = ()) -> bool:
    """True for an accelerator out-of-memory error (CUDA, ROCm, MPS, XPU) or one of ``oom_types``."""
    if isinstance(exc, tuple(oom_types)) or isinstance(exc, torch.OutOfMemoryError):
        return True
    # MPS and some torch builds raise a plain RuntimeError whose text says so.
    return type(exc) in (RuntimeError, getattr(torch, "AcceleratorError", RuntimeError)) and \
        "out of memory" in str(exc).lower()


class _Replan(Exception):
    """Internal: out of memory before any tile finished; plan again with the smaller limit."""


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype the model computes (works for nn.Module and spandrel descriptors)."""
    for obj in (model, getattr(model, "model", None)):
        if obj is None:
            continue
        params = getattr(obj, "parameters", None)
        if callable(params):
            for p in params():
                return p.device, p.dtype
    device, dtype = getattr(model, "device", None), getattr(model, "dtype", None)
    if isinstance(device, torch.device) and isinstance(dtype, torch.dtype):
        return device, dtype
    return torch.device("cpu"), torch.float32


def _model_scale(model: torch.nn.Module) -> int:
    scale = getattr(model, "scale", None)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise DLGSANetError(f"the model has no usable integer 'scale' attribute (got {scale!r})")
    return scale


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        hint = " (for RGBA use dlgsanet.alpha.upscale_rgba)" if isinstance(images, torch.Tensor) \
            and images.dim() == 4 and images.shape[1] == 4 else ""
        raise ImageInputError(f"expected images as a [B,3,H,W] tensor, got {shape}{hint}")
    if not images.dtype.is_floating_point:
        raise ImageInputError(f"expected float images in 0..1, got dtype {images.dtype}")
    if images.shape[2] < 1 or images.shape[3] < 1:
        raise ImageInputError(f"image has no pixels: {tuple(images.shape)}")


def border_pad_for(border: str, border_pad: Optional[int]) -> int:
    """Input pixels to mirror onto each side for ``border`` (0 for "official"); checks both."""
    if border not in BORDER_MODES:
        raise TileSettingsError(f"border must be one of {BORDER_MODES}, got {border!r}")
    pad = BORDER_PAD if border_pad is None else border_pad
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise TileSettingsError(f"border_pad must be an integer >= 0 (input pixels), got {border_pad!r}")
    return 0 if border == "official" else pad


def mirrored_crop(image: torch.Tensor, y0: int, y1: int, x0: int, x1: int, pad: int) -> torch.Tensor:
    """Rows ``y0:y1`` and columns ``x0:x1`` of ``image`` [C,H,W] mirrored outwards by ``pad`` on
    every side (coordinates in the padded image). Only what the tile needs is copied."""
    h, w = image.shape[-2:]
    crop = image
    for dim, (a, b), n in ((-2, (y0 - pad, y1 - pad), h), (-1, (x0 - pad, x1 - pad), w)):
        if 0 <= a and b <= n:
            crop = crop.narrow(dim, a, b - a)
        else:
            crop = crop.index_select(dim, mirror_index(n, a, b).to(image.device))
    return crop


def _finalise(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    x = x.clamp(0, 1)
    if dtype == torch.uint8:
        return x.mul_(255).round_().to(torch.uint8)
    return x.to(dtype)


class _Engine:
    """Runs tiles through the network and streams their blended outputs into the result."""

    def __init__(self, runner: Runner, *, scale: int, device: torch.device, dtype: torch.dtype,
                 channels: int, overlap: int, ramp: float, min_tile: int, limit: int,
                 cancel: Optional[Callable[[], object]], oom_types: Sequence[type],
                 align_tlc: bool) -> None:
        self.runner, self.scale, self.device, self.dtype = runner, scale, device, dtype
        self.channels = channels
        self.align_tlc = align_tlc
        self.image_size = (0, 0)  # (H, W) of the image being upscaled: the TLC frame
        self.overlap, self.ramp, self.min_tile, self.limit = overlap, ramp, min_tile, limit
        self.cancel, self.oom_types = cancel, tuple(oom_types)
        self.progress_started = False

    # -- one tile --------------------------------------------------------------------------
    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise UpscaleCancelled("upscale cancelled")

    def _forward(self, crop: torch.Tensor, origin: tuple[int, int]) -> torch.Tensor:
        frame = tlc_frame(*origin, *self.image_size) if self.align_tlc else nullcontext()
        with frame:
            out = self.runner(crop)
        h, w = crop.shape[-2:]
        expected = (crop.shape[0], self.channels, h * self.scale, w * self.scale)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise DLGSANetError(f"the model returned {got} for a {tuple(crop.shape)} tile; "
                                f"expected {expected} (scale x{self.scale})")
        return out.to(self.device, torch.float32)

    def infer(self, crop: torch.Tensor, origin: tuple[int, int], may_replan: bool) -> torch.Tensor:
        """[C,h,w] input at ``origin`` (top, left) of the image -> [channels,s*h,s*w] float32 on
        the compute device, retrying on OOM."""
        while True:
            try:
                h, w = crop.shape[-2:]
                if max(h, w) <= self.limit:
                    x = crop.to(self.device, self.dtype).unsqueeze(0)
                    return self._forward(x, origin)[0]
                return self._subtiled(crop, origin)
            except BaseException as exc:  # noqa: B902 - filtered right below, others re-raised
                if not is_out_of_memory(exc, self.oom_types):
                    raise
            # Out of the except block: the failed tile's tensors (held by the traceback) are gone.
            self._shrink(max(crop.shape[-2:]))
            if may_replan:
                raise _Replan()

    def _shrink(self, failed_side: int) -> None:
        failed = min(self.limit, failed_side)
        new = failed // 2
        new -= new % 8 if new >= 16 else 0
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if new < self.min_tile or new <= self.overlap:
            raise TileOutOfMemoryError(
                f"out of memory on {self.device} even with {failed}px tiles (the smallest allowed is "
                f"{self.min_tile}px with {self.overlap}px overlap). Free memory on the device (close "
                f"other programs or models), use a smaller model, or run on the CPU.")
        self.limit = new

    def _subtiled(self, crop: torch.Tensor, origin: tuple[int, int]) -> torch.Tensor:
        """A tile too big for the current limit: tile it with the limit, output on the device."""
        h, w = crop.shape[-2:]
        out = torch.empty(self.channels, h * self.scale, w * self.scale, dtype=torch.float32,
                          device=self.device)
        plan = plan_tiles(h, w, self.limit, self.overlap)
        self.stream(crop, plan, out, origin, after_tile=None, top_level=False)
        return out

    # -- one image ---------------------------------------------------------------------------
    def stream(self, image: torch.Tensor, plan: TilePlan, out: torch.Tensor, origin: tuple[int, int],
               after_tile: Optional[Callable[[], None]], top_level: bool, pad: int = 0) -> None:
        """Blend every tile of ``plan`` over ``image`` [C,H,W] (at ``origin`` in the whole
        image) into ``out`` [channels,sH,sW].

        With ``pad`` > 0, ``plan`` covers ``image`` mirrored outwards by ``pad`` pixels on each
        side; tiles are cut from that padded image and only ``out``'s part of the result is kept.

        At top level each finished region is clamped and converted to ``out``'s dtype and
        device; sub-tiles (OOM fallback) stay float32 and unclamped. Tiles go row-major over
        ``plan`` (column-major when the image is landscape, by running the same loop on
        transposed views), and each output region is written once, final.
        """
        s = self.scale
        P = pad * s  # output pixels of padding before out's first row and column
        transposed = plan.width > plan.height
        if transposed:
            image, out = image.transpose(-1, -2), out.transpose(-1, -2)
            plan = TilePlan(plan.cols, plan.rows)
        rows, cols = plan.rows, plan.cols
        wy_all = [w.to(self.device) for w in axis_weights(rows, s, self.ramp)]
        wx_all = [w.to(self.device) for w in axis_weights(cols, s, self.ramp)]
        out_w = cols.size * s
        carry: Optional[torch.Tensor] = None  # rows [Y0 of this tile row, end of previous row)
        for i in range(len(rows)):
            y0, y1 = rows.span(i)
            Y0, Y1, NY = y0 * s, y1 * s, rows.next_start(i) * s
            new_carry = None if i + 1 == len(rows) else \
                torch.empty(self.channels, Y1 - NY, out_w, dtype=torch.float32, device=self.device)
            left: Optional[torch.Tensor] = None  # cols [X0 of this tile, end of previous tile)
            prev_X1 = 0
            for j in range(len(cols)):
                x0, x1 = cols.span(j)
                X0, X1, NX = x0 * s, x1 * s, cols.next_start(j) * s
                self.check_cancel()
                may_replan = top_level and not self.progress_started and i == 0 and j == 0
                crop = mirrored_crop(image, y0, y1, x0, x1, pad) if pad else image[:, y0:y1, x0:x1]
                # The network always sees the tile the right way up; only blending is transposed.
                if transposed:
                    crop, at = crop.transpose(-1, -2), (origin[0] + x0, origin[1] + y0)
                else:
                    at = (origin[0] + y0, origin[1] + x0)
                tile = self.infer(crop, at, may_replan)
                if transposed:
                    tile = tile.transpose(-1, -2)
                acc = tile * wy_all[i][:, None]
                del tile
                acc *= wx_all[j]
                if left is not None:
                    acc[:, :, :left.shape[-1]] += left
                if carry is not None:  # the previous row's share, once per column
                    c0 = max(prev_X1, X0)
                    acc[:, :carry.shape[1], c0 - X0:] += carry[:, :, c0:X1]
                # The finished region [Y0, NY) x [X0, NX), less the padding around out.
                ry0, ry1 = max(Y0, P), min(NY, P + out.shape[-2])
                rx0, rx1 = max(X0, P), min(NX, P + out.shape[-1])
                if ry0 < ry1 and rx0 < rx1:
                    region = out[:, ry0 - P:ry1 - P, rx0 - P:rx1 - P]
                    final = acc[:, ry0 - Y0:ry1 - Y0, rx0 - X0:rx1 - X0]
                    region.copy_(_finalise(final, region.dtype) if top_level else final)
                if new_carry is not None:
                    new_carry[:, :, X0:NX] = acc[:, NY - Y0:, :NX - X0]
                left = acc[:, :, NX - X0:].clone() if j + 1 < len(cols) else None
                del acc
                prev_X1 = X1
                if after_tile is not None:
                    after_tile()
            carry = new_carry
            del new_carry


def upscale(model: torch.nn.Module, images: torch.Tensor, *, tile_size: Optional[int] = None,
            overlap: Optional[int] = None, progress: Optional[Callable[[int, int], None]] = None,
            cancel: Optional[Callable[[], bool]] = None, output_dtype: Optional[torch.dtype] = None,
            output_device: Optional[torch.device] = None, out: Optional[torch.Tensor] = None,
            min_tile_size: int = MIN_TILE_SIZE, memory_budget: Optional[int] = None,
            runner: Optional[Runner] = None, oom_types: Sequence[type] = (),
            ramp: float = DEFAULT_RAMP, align_tlc: bool = True, border: str = DEFAULT_BORDER,
            border_pad: Optional[int] = None, outscale: Optional[float] = None) -> torch.Tensor:
    """Upscale ``images`` [B,3,H,W] float in 0..1 by ``model.scale``; result clamped to 0..1.

    - ``outscale``: any other output factor instead (1.5, 2 from a x4 model, 8 from a x4 model
      by two passes): model passes, then antialiased resampling (``dlgsanet.resample``).
      ``progress`` then counts input pixels of all passes when there are several; ``out`` is
      not accepted with it.

    - ``tile_size`` (input pixels): None = whole image when it fits in free memory, else the
      largest tile that fits; an int forces tiles of that size (the image is still one tile
      when it is smaller). ``overlap`` defaults to ``tiling.DEFAULT_OVERLAP``.
    - ``border``: "mirror" (default) mirrors ``border_pad`` (default ``BORDER_PAD``) pixels
      onto each side before the network and crops its output, so border pixels keep their
      colour (the network zero-pads, which pulls them towards grey); "official" gives exactly
      ``model(x)``, as the official test code and published scores do.
    - ``progress(done, total)`` is called once with ``done = 0`` before the first tile (so a
      host can start its clock), then after each tile; ``total`` = batch x tiles per image,
      fixed from the first finished tile on (an out-of-memory re-plan before it announces
      ``(0, new total)``). ``cancel()`` is called before each tile and a true result raises
      ``UpscaleCancelled``. Exceptions raised by either (a host's own interrupt) pass through
      untouched.
    - ``output_dtype``: a float dtype or ``torch.uint8`` (0..255, a quarter of float32's
      memory); default the images' dtype. ``output_device`` defaults to the images' device.
      ``out``: an existing [B,3,sH,sW] tensor or view to write into instead (for example a
      channels-last buffer's ``movedim(-1, 1)``); its contents are undefined after an error.
    - On out-of-memory the tile is halved down to ``min_tile_size``, then
      ``TileOutOfMemoryError``. ``runner(x)`` replaces ``model(x)`` for each tile (hosts that
      wrap the call; tests that inject failures); ``oom_types`` adds exception types to treat
      as out-of-memory. ``memory_budget`` (bytes) overrides the free-memory estimate.
    - ``align_tlc``: lay each tile's TLC attention windows out as the whole image would (much
      closer to whole-image output); False runs every tile as an independent image.
    """
    _check_images(images)
    scale = _model_scale(model)
    if outscale is not None:  # any other output factor: passes + resampling (resample.py)
        from .resample import upscale_by

        def one_pass(x: torch.Tensor, p: Optional[Callable[[int, int], None]]) -> torch.Tensor:
            return upscale(model, x, tile_size=tile_size, overlap=overlap, progress=p, cancel=cancel,
                           min_tile_size=min_tile_size, memory_budget=memory_budget, runner=runner,
                           oom_types=oom_types, ramp=ramp, align_tlc=align_tlc, border=border,
                           border_pad=border_pad)
        return upscale_by(one_pass, images, outscale, scale=scale, progress=progress, out=out,
                          output_dtype=output_dtype, output_device=output_device)
    b, _, h, w = images.shape
    if out is None:
        out_dtype = images.dtype if output_dtype is None else output_dtype
        if out_dtype not in OUTPUT_DTYPES:
            raise ImageInputError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {output_dtype}")
    else:
        expected = (b, 3, h * scale, w * scale)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected \
                or out.dtype not in OUTPUT_DTYPES:
            got = (tuple(out.shape), out.dtype) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ImageInputError(f"out must be a tensor of shape {expected} and a dtype in "
                                  f"{OUTPUT_DTYPES}, got {got}")
        if output_dtype is not None or output_device is not None:
            raise ImageInputError("pass either out or output_dtype/output_device, not both")
        out_dtype, output_device = out.dtype, out.device
    out_device = images.device if output_device is None else torch.device(output_device)
    return run_tiled(model, images, out_channels=3, tile_size=tile_size, overlap=overlap,
                     progress=progress, cancel=cancel, out=out, output_dtype=out_dtype,
                     output_device=out_device, min_tile_size=min_tile_size,
                     memory_budget=memory_budget, runner=runner, oom_types=oom_types, ramp=ramp,
                     align_tlc=align_tlc, border=border, border_pad=border_pad)


def run_tiled(model: torch.nn.Module, images: torch.Tensor, *, out_channels: int = 3,
              tile_size: Optional[int] = None, overlap: Optional[int] = None,
              progress: Optional[Callable[[int, int], None]] = None,
              cancel: Optional[Callable[[], bool]] = None, out: Optional[torch.Tensor] = None,
              output_dtype: torch.dtype = torch.float32, output_device: Optional[torch.device] = None,
              min_tile_size: int = MIN_TILE_SIZE, memory_budget: Optional[int] = None,
              runner: Optional[Runner] = None, oom_types: Sequence[type] = (),
              ramp: float = DEFAULT_RAMP, align_tlc: bool = True, border: str = DEFAULT_BORDER,
              border_pad: Optional[int] = None) -> torch.Tensor:
    """The engine behind :func:`upscale` for any channel counts (``alpha.py`` runs 1-channel alpha).

    ``runner`` maps a [1,C_in,h,w] tile to [1,out_channels,s*h,s*w]; arguments are not
    re-validated here beyond the tiling settings. Same keywords and defaults as ``upscale``.
    """
    scale = _model_scale(model)
    output_device = images.device if output_device is None else torch.device(output_device)
    device, dtype = model_device_dtype(model)
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    check_settings(overlap=overlap, min_tile_size=min_tile_size, tile_size=tile_size, ramp=ramp)
    pad = border_pad_for(border, border_pad)
    b, _, h, w = images.shape
    hp, wp = h + 2 * pad, w + 2 * pad  # the (virtual) padded image the tiles are planned over
    engine: Optional[_Engine] = None
    try:
        if out is None:
            out = torch.empty(b, out_channels, h * scale, w * scale, dtype=output_dtype,
                              device=output_device)
        if b == 0:
            return out
        if tile_size is None:
            reserved = out.numel() * out.element_size() if out.device == device else 0
            auto = auto_tile_size(model, hp, wp, device=device, dtype=dtype, budget=memory_budget,
                                  reserved=reserved)
            limit = max(hp, wp) if auto is None else max(auto, min_tile_size, overlap + 1)
        else:
            limit = tile_size
        engine = _Engine(runner if runner is not None else model, scale=scale, device=device,
                         dtype=dtype, channels=out_channels, overlap=overlap, ramp=ramp,
                         min_tile=min_tile_size, limit=limit, cancel=cancel, oom_types=oom_types,
                         align_tlc=align_tlc)
        engine.image_size = (hp, wp)
        done, total, announced = 0, 0, None

        def after_tile() -> None:
            nonlocal done
            done += 1
            engine.progress_started = True
            if progress is not None:
                progress(done, total)

        with torch.inference_mode():
            for k in range(b):
                while True:
                    plan = plan_tiles(hp, wp, engine.limit, overlap)
                    if not engine.progress_started:
                        total = b * len(plan)
                        if progress is not None and total != announced:
                            announced = total
                            progress(0, total)  # work starts now (and this many tiles)
                    try:
                        engine.stream(images[k], plan, out[k], (0, 0), after_tile, top_level=True,
                                      pad=pad)
                        break
                    except _Replan:
                        continue
        result, out = out, None
        return result
    except BaseException as exc:
        # Release every tile, band and the unfinished output now, not when the caller drops the
        # exception: its traceback would otherwise keep them alive (host error reporters do).
        out = engine = None
        traceback.clear_frames(exc.__traceback__)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise
