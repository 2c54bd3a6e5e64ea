"""The tiled engine: runs tiles through the network and streams their blended outputs.

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
mean, and border pixels are pulled towards it. With ``border="mirror"`` the engine upscales the
image mirrored outwards by ``border_pad`` pixels on every side and keeps only the image's own
part of the output. Tiles are planned over that padded image, so only tiles touching the border
carry padding (an interior tile's edges already have real context) and tiled output still
matches the untiled one. ``border="official"`` runs the image as it is, exactly as ``model(x)``
and the official test code do. Figures in docs/tiling.md ("Image borders").

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

from ..errors import DLGSANetError, TileOutOfMemoryError, UpscaleCancelled
from ..model.tlc import tlc_frame
from .memory import OomHint, first_tile_size, halved_tile_size, is_out_of_memory
from .plan import TilePlan, axis_weights, mirror_index, plan_tiles
from .settings import TileSettings

Runner = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


class _Replan(Exception):
    """Internal: out of memory before any tile finished; plan again with the smaller tile size."""


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


def model_scale(model: torch.nn.Module) -> int:
    """The model's integer upscaling factor, or a clear error for a model without one."""
    scale = getattr(model, "scale", None)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise DLGSANetError(f"the model has no usable integer 'scale' attribute (got {scale!r})")
    return scale


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

    def __init__(self, runner: Runner, tiles: TileSettings, *, scale: int, device: torch.device,
                 dtype: torch.dtype, channels: int, tile_size: int,
                 cancel: Optional[Callable[[], object]], oom_types: Sequence[OomHint]) -> None:
        self.runner, self.tiles, self.scale, self.device, self.dtype = runner, tiles, scale, device, dtype
        self.channels = channels
        self.image_size = (0, 0)  # (H, W) of the image being upscaled: the TLC frame
        #: The tile side in effect: the asked or automatic size, halved on out-of-memory.
        self.tile_size = tile_size
        self.cancel, self.oom_types = cancel, tuple(oom_types)
        self.progress_started = False

    # -- one tile --------------------------------------------------------------------------
    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise UpscaleCancelled("upscale cancelled")

    def _forward(self, crop: torch.Tensor, origin: tuple[int, int]) -> torch.Tensor:
        frame = tlc_frame(*origin, *self.image_size) if self.tiles.align_tlc else nullcontext()
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
                if max(h, w) <= self.tile_size:
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
        failed = min(self.tile_size, failed_side)
        new = halved_tile_size(failed, self.tiles)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if new is None:
            raise TileOutOfMemoryError(
                f"out of memory on {self.device} even with {failed}px tiles (the smallest allowed is "
                f"{self.tiles.min_tile_size}px with {self.tiles.overlap}px overlap). Free memory on the "
                f"device (close other programs or models), use a smaller model, or run on the CPU.")
        self.tile_size = new

    def _subtiled(self, crop: torch.Tensor, origin: tuple[int, int]) -> torch.Tensor:
        """A tile too big for the current tile size: tile it, output on the device."""
        h, w = crop.shape[-2:]
        out = torch.empty(self.channels, h * self.scale, w * self.scale, dtype=torch.float32,
                          device=self.device)
        plan = plan_tiles(h, w, self.tile_size, self.tiles.overlap)
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
        wy_all = [w.to(self.device) for w in axis_weights(rows, s, self.tiles.ramp)]
        wx_all = [w.to(self.device) for w in axis_weights(cols, s, self.tiles.ramp)]
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


def run_tiled(model: torch.nn.Module, images: torch.Tensor, tiles: TileSettings = TileSettings(), *,
              out_channels: int = 3, progress: Optional[Progress] = None,
              cancel: Optional[Callable[[], bool]] = None, out: Optional[torch.Tensor] = None,
              output_dtype: torch.dtype = torch.float32, output_device: Optional[torch.device] = None,
              runner: Optional[Runner] = None, oom_types: Sequence[OomHint] = ()) -> torch.Tensor:
    """Upscale ``images`` [B,C,H,W] tile by tile as ``tiles`` says, for any channel counts: the
    engine behind :func:`dlgsanet.upscale` (``alpha.py`` runs 1-channel alpha through it).

    ``runner`` maps a [1,C_in,h,w] tile to [1,out_channels,s*h,s*w] (default ``model``);
    ``oom_types`` adds exception classes or predicates that mean out-of-memory. Arguments are
    not re-validated here: ``tiles`` is valid by construction, the rest is the caller's.
    """
    scale = model_scale(model)
    output_device = images.device if output_device is None else torch.device(output_device)
    device, dtype = model_device_dtype(model)
    pad = tiles.pad
    b, _, h, w = images.shape
    hp, wp = h + 2 * pad, w + 2 * pad  # the (virtual) padded image the tiles are planned over
    engine: Optional[_Engine] = None
    try:
        if out is None:
            out = torch.empty(b, out_channels, h * scale, w * scale, dtype=output_dtype,
                              device=output_device)
        if b == 0:
            return out
        reserved = out.numel() * out.element_size() if out.device == device else 0
        tile_size = first_tile_size(tiles, model, hp, wp, device=device, dtype=dtype, reserved=reserved)
        engine = _Engine(runner if runner is not None else model, tiles, scale=scale, device=device,
                         dtype=dtype, channels=out_channels, tile_size=tile_size, cancel=cancel,
                         oom_types=oom_types)
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
                    plan = plan_tiles(hp, wp, engine.tile_size, tiles.overlap)
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
