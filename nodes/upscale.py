"""Upscale Image with DLGSANet / Tiled Upscale (DLGSANet): ComfyUI IMAGE in, IMAGE out.

The work is ``dlgsanet.alpha.upscale_rgba`` (RGBA split, tiling, blending, out-of-memory halving),
or ``dlgsanet.resample.upscale_rgba_to`` for a "scale by" factor other than the model's (model
passes, then antialiased resampling); this module only hands them ComfyUI's ``[B,H,W,C]`` images
and drives ComfyUI's memory manager, progress bar, cancel button and out-of-memory test.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..dlgsanet import ImageInputError, UpscaleCancelled
from ..dlgsanet.alpha import upscale_rgba
from ..dlgsanet.tiling.memory import bytes_per_pixel
from ..dlgsanet.resample import target_size, upscale_rgba_to
from . import host

#: Tile side whose working memory is requested from ComfyUI when the engine picks the tile size
#: itself (the size ComfyUI's own upscale node uses); the engine then sizes tiles to what is free.
REQUEST_TILE = 512


def working_memory(model: torch.nn.Module, height: int, width: int, tile_size: Optional[int]) -> int:
    """Bytes to ask ComfyUI to free: the weights plus one tile's activations (or the image's)."""
    param = next(model.parameters())
    side = tile_size or REQUEST_TILE
    pixels = min(height, side) * min(width, side)
    return host.module_size(model) + int(pixels * bytes_per_pixel(model, param.dtype))


def check_inputs(model: Any, image: Any) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ImageInputError(f"DLGSANet expects an IMAGE [batch, height, width, 3 or 4 channels], "
                              f"got {shape}")
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ImageInputError(f"expected a model from \"Load DLGSANet Model\", got {type(model).__name__}")


def outscale(scale_by: Optional[float]) -> Optional[float]:
    """The "scale by" input as the engine's ``outscale``: None (the model's scale) for 0."""
    if scale_by is None or scale_by == 0:
        return None
    return float(scale_by)  # a negative or non-finite value gets the engine's own clear error


def run_upscale(model: torch.nn.Module, image: torch.Tensor, *, tile_size: Optional[int],
                overlap: Optional[int], scale_by: Optional[float] = 0.0) -> torch.Tensor:
    """Upscale a ComfyUI IMAGE [B,H,W,C] (C = 3 or 4) by the model's scale, or by ``scale_by``
    (the final size relative to the input; 0 = the model's scale).

    ``tile_size=None`` lets the engine choose (the whole image when it fits). Memory is freed
    through ComfyUI first and handed back after, even on error or cancel.
    """
    check_inputs(model, image)
    factor = outscale(scale_by)
    batch, height, width, channels = image.shape
    out_device, out_dtype = host.intermediate_device(), host.intermediate_dtype()
    if factor is not None:
        target_size(max(height, 1), max(width, 1), outscale=factor)  # a bad factor fails first
    if batch == 0 or height == 0 or width == 0:
        f = model.scale if factor is None else factor
        return torch.zeros((batch, round(height * f), round(width * f), channels), device=out_device,
                           dtype=out_dtype)
    device = host.compute_device()
    host.free_memory_for(working_memory(model, height, width, tile_size), device)
    model.to(device)
    try:
        return _upscale(model, image, tile_size, overlap, out_device, out_dtype, factor)
    finally:
        model.to(host.offload_device())
        host.release_memory()


def _upscale(model: torch.nn.Module, image: torch.Tensor, tile_size: Optional[int],
             overlap: Optional[int], out_device: torch.device, out_dtype: torch.dtype,
             factor: Optional[float]) -> torch.Tensor:
    """The engine does the work, halving tiles on what it or this ComfyUI takes for out of
    memory; a cancel always leaves as ComfyUI's own interrupt."""
    common = dict(channels_last=True, output_dtype=out_dtype, output_device=out_device,
                  progress=host.Progress(), cancel=host.cancel_check(), tile_size=tile_size,
                  overlap=overlap, oom_types=(host.is_oom,))
    try:
        if factor is None:
            return upscale_rgba(model, image, **common)
        return upscale_rgba_to(model, image, outscale=factor, **common)
    except UpscaleCancelled as e:
        raise host.interrupt_exception()() from e
