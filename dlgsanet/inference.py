"""Inference entry point shared by the CLI, the ComfyUI nodes and the A1111 upscaler.

(Whole-image version; the tiling engine replaces the body while keeping this signature.)
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .errors import ImageInputError, UpscaleCancelled


def upscale(model: torch.nn.Module, images: torch.Tensor, *, tile_size: Optional[int] = None,
            overlap: Optional[int] = None, progress: Optional[Callable[[int, int], None]] = None,
            cancel: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """Upscale ``images`` [B,3,H,W] float in 0..1 by ``model.scale``; result clamped to 0..1."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ImageInputError(f"expected images as a [B,3,H,W] tensor, got "
                              f"{getattr(images, 'shape', type(images).__name__)}")
    if cancel is not None and cancel():
        raise UpscaleCancelled("upscale cancelled")
    param = next(model.parameters())
    with torch.inference_mode():
        out = model(images.to(param.device, param.dtype)).clamp_(0, 1)
    if progress is not None:
        progress(1, 1)
    return out.to(images.dtype)
