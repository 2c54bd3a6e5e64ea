"""Upscale Image with DLGSANet / Tiled Upscale (DLGSANet): ComfyUI IMAGE in, IMAGE out.

The work is ``dlgsanet.alpha.upscale_rgba`` (RGBA split, tiling, blending, out-of-memory halving);
this module only hands it ComfyUI's ``[B,H,W,C]`` images and drives ComfyUI's memory manager,
progress bar and cancel button.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch

from ..dlgsanet import ImageInputError, UpscaleCancelled
from ..dlgsanet.alpha import upscale_rgba
from ..dlgsanet.memory import bytes_per_pixel
from ..dlgsanet.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, MIN_TILE_SIZE
from . import host

log = logging.getLogger("DLGSANet")

CATEGORY = "image/upscaling"
MODEL_TYPE = "DLGSANET_MODEL"
#: Tile side whose working memory is requested from ComfyUI when the engine picks the tile size
#: itself (the size ComfyUI's own upscale node uses); the engine then sizes tiles to what is free.
REQUEST_TILE = 512

_MODEL_INPUT = (MODEL_TYPE, {"tooltip": "A DLGSANet model from the \"Load DLGSANet Model\" node."})
_IMAGE_INPUT = ("IMAGE", {"tooltip": "Images to upscale, any batch size. RGB or RGBA: the alpha "
                                     "channel is upscaled separately and re-attached."})
_OUTPUT_TOOLTIPS = ("The upscaled images (scale x height, scale x width), RGBA if the input was.",)


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


def run_upscale(model: torch.nn.Module, image: torch.Tensor, *, tile_size: Optional[int],
                overlap: Optional[int]) -> torch.Tensor:
    """Upscale a ComfyUI IMAGE [B,H,W,C] (C = 3 or 4) by the model's scale.

    ``tile_size=None`` lets the engine choose (the whole image when it fits). Memory is freed
    through ComfyUI first and handed back after, even on error or cancel.
    """
    check_inputs(model, image)
    batch, height, width, channels = image.shape
    out_device, out_dtype = host.intermediate_device(), host.intermediate_dtype()
    if batch == 0 or height == 0 or width == 0:
        s = model.scale
        return torch.zeros((batch, height * s, width * s, channels), device=out_device, dtype=out_dtype)
    device = host.compute_device()
    host.free_memory_for(working_memory(model, height, width, tile_size), device)
    model.to(device)
    try:
        return _upscale_retrying(model, image, tile_size, overlap, out_device, out_dtype)
    finally:
        model.to(host.offload_device())
        host.release_memory()


def _upscale_retrying(model: torch.nn.Module, image: torch.Tensor, tile_size: Optional[int],
                      overlap: Optional[int], out_device: torch.device,
                      out_dtype: torch.dtype) -> torch.Tensor:
    """The engine halves tiles on the out-of-memory errors it knows; one that only this
    ComfyUI's ``is_oom`` recognises is retried here with half the tile. A cancel always
    leaves as ComfyUI's own interrupt."""
    progress, cancel = host.Progress(), host.cancel_check()
    interrupt = host.interrupt_exception()
    tile = tile_size
    while True:
        try:
            return upscale_rgba(model, image, channels_last=True, output_dtype=out_dtype,
                                output_device=out_device, progress=progress, cancel=cancel,
                                tile_size=tile, overlap=overlap)
        except interrupt:
            raise
        except UpscaleCancelled as e:
            raise interrupt() from e
        except Exception as e:
            smaller = (tile or 2 * DEFAULT_TILE_SIZE) // 2
            if not host.is_oom(e) or smaller < MIN_TILE_SIZE:
                raise
            log.warning("DLGSANet: out of memory at tile size %s; retrying with %d",
                        tile or "auto", smaller)
            tile = smaller
            host.release_memory()


class DLGSANetUpscale:
    """Upscale Image with DLGSANet."""

    DESCRIPTION = ("Upscales images with a DLGSANet super-resolution model by its scale (x2, x3, "
                   "x4). The whole image is processed at once when it fits in memory; otherwise, "
                   "or after an out-of-memory error, it is processed in overlapping tiles that "
                   "are blended without seams.")
    CATEGORY = CATEGORY
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    OUTPUT_TOOLTIPS = _OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"dlgsanet_model": _MODEL_INPUT, "image": _IMAGE_INPUT}}

    def upscale(self, dlgsanet_model: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (run_upscale(dlgsanet_model, image, tile_size=None, overlap=None),)


class DLGSANetTiledUpscale:
    """Tiled Upscale (DLGSANet)."""

    DESCRIPTION = ("Upscales images with a DLGSANet model in overlapping tiles of a size you "
                   "choose, blended without seams: bounded memory for very large images. On "
                   "out-of-memory the tile size is halved and the tile retried.")
    CATEGORY = CATEGORY
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    OUTPUT_TOOLTIPS = _OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "dlgsanet_model": _MODEL_INPUT,
            "image": _IMAGE_INPUT,
            "tile_size": ("INT", {
                "default": DEFAULT_TILE_SIZE, "min": MIN_TILE_SIZE, "max": 8192, "step": 8,
                "tooltip": "Side of a square tile in input pixels. Smaller tiles use less memory; "
                           "larger ones are a little faster. Halved automatically on out-of-memory."}),
            "overlap": ("INT", {
                "default": DEFAULT_OVERLAP, "min": 0, "max": 512, "step": 1,
                "tooltip": "Overlap between neighbouring tiles in input pixels, blended smoothly. "
                           f"The default ({DEFAULT_OVERLAP}) is seamless; must be smaller than the "
                           "tile size."}),
        }}

    def upscale(self, dlgsanet_model: torch.nn.Module, image: torch.Tensor, tile_size: int,
                overlap: int) -> tuple[torch.Tensor]:
        return (run_upscale(dlgsanet_model, image, tile_size=int(tile_size), overlap=int(overlap)),)
