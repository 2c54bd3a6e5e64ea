"""``dlgsanet.upscale``: the public front of inference, shared by the CLI, the ComfyUI nodes and
the A1111 upscaler.

It checks what the caller handed over (images, output dtype and buffer), turns the tile
keywords into one :class:`~dlgsanet.tiling.TileSettings` and hands the work to the tiled
engine (``dlgsanet/tiling/``), which runs the whole image at once when it fits in memory and
otherwise blends overlapping tiles. Other output factors go through ``resample.py``.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .errors import ImageInputError
from .tiling.engine import Progress, Runner, model_scale, run_tiled
from .tiling.memory import OomHint
from .tiling.settings import DEFAULT_BORDER, DEFAULT_RAMP, MIN_TILE_SIZE, TileSettings, tile_settings

OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8)


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


def upscale(model: torch.nn.Module, images: torch.Tensor, *, tile_size: Optional[int] = None,
            overlap: Optional[int] = None, progress: Optional[Progress] = None,
            cancel: Optional[Callable[[], bool]] = None, output_dtype: Optional[torch.dtype] = None,
            output_device: Optional[torch.device] = None, out: Optional[torch.Tensor] = None,
            min_tile_size: int = MIN_TILE_SIZE, memory_budget: Optional[int] = None,
            runner: Optional[Runner] = None, oom_types: Sequence[OomHint] = (),
            ramp: float = DEFAULT_RAMP, align_tlc: bool = True, border: str = DEFAULT_BORDER,
            border_pad: Optional[int] = None, outscale: Optional[float] = None,
            tiles: Optional[TileSettings] = None) -> torch.Tensor:
    """Upscale ``images`` [B,3,H,W] float in 0..1 by ``model.scale``; result clamped to 0..1.

    - ``outscale``: any other output factor instead (1.5, 2 from a x4 model, 8 from a x4 model
      by two passes): model passes, then antialiased resampling (``dlgsanet.resample``).
      ``progress`` then counts input pixels of all passes when there are several; ``out`` is
      not accepted with it.
    - Tiling: ``tile_size``, ``overlap``, ``min_tile_size``, ``memory_budget``, ``ramp``,
      ``align_tlc``, ``border`` and ``border_pad`` are the fields of
      :class:`dlgsanet.tiling.TileSettings` (meanings and defaults there); or pass one
      ``tiles=TileSettings(...)`` instead. By default the whole image runs at once when it fits
      in free memory, else the largest tile that fits, and the border is mirror-padded so border
      pixels keep their colour (``border="official"`` gives exactly ``model(x)``).
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
      wrap the call; tests that inject failures); ``oom_types`` adds exception classes, or
      predicates on the exception (a host's own "is this out of memory?"), to treat as
      out-of-memory (:func:`dlgsanet.tiling.is_out_of_memory`).
    """
    _check_images(images)
    scale = model_scale(model)
    tiles = tile_settings(tiles, tile_size=tile_size, overlap=overlap, min_tile_size=min_tile_size,
                          ramp=ramp, align_tlc=align_tlc, border=border, border_pad=border_pad,
                          memory_budget=memory_budget)
    if outscale is not None:  # any other output factor: passes + resampling (resample.py)
        from .resample import upscale_by

        def one_pass(x: torch.Tensor, p: Optional[Progress]) -> torch.Tensor:
            return upscale(model, x, tiles=tiles, progress=p, cancel=cancel, runner=runner,
                           oom_types=oom_types)
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
    return run_tiled(model, images, tiles, out_channels=3, progress=progress, cancel=cancel, out=out,
                     output_dtype=out_dtype, output_device=out_device, runner=runner,
                     oom_types=oom_types)
