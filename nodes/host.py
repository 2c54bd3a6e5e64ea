"""The ComfyUI APIs the nodes use, detected instead of assumed (ComfyUI mid-2025 to current).

Differences handled here, so the node classes stay version-free:
- ``intermediate_device()`` / ``intermediate_dtype()``: where and in which dtype IMAGE tensors
  live (``intermediate_dtype`` is new; older versions always use float32).
- ``is_oom(e)`` (new): also recognises accelerator errors that mean out-of-memory; older
  versions only have ``OOM_EXCEPTION``, which is ``Exception`` itself on torch builds without
  CUDA and would call every error an OOM, so it is not used. Our :func:`is_oom` is handed to
  the engine, which adds it to its own test and halves the tiles on either.
- ``InterruptProcessingException`` derives from ``BaseException`` in new versions and from
  ``Exception`` in old ones: a cancel is always re-raised by its own class, first.
- Progress: ``comfy.utils.ProgressBar``; its global hook is also a cancel point, but newer
  versions throttle it, so cancel is checked explicitly before every tile.
"""
from __future__ import annotations

from typing import Callable

import comfy.model_management as mm
import comfy.utils
import torch


def compute_device() -> torch.device:
    """The device ComfyUI runs models on (``--cpu``, CUDA, MPS, XPU, DirectML...)."""
    return mm.get_torch_device()


def offload_device() -> torch.device:
    """Where a model rests between runs (CPU unless ``--gpu-only`` / high-VRAM modes)."""
    fn = getattr(mm, "unet_offload_device", None)
    return fn() if fn is not None else torch.device("cpu")


def intermediate_device() -> torch.device:
    fn = getattr(mm, "intermediate_device", None)
    return fn() if fn is not None else torch.device("cpu")


def intermediate_dtype() -> torch.dtype:
    fn = getattr(mm, "intermediate_dtype", None)
    return fn() if fn is not None else torch.float32


def interrupt_exception() -> type[BaseException]:
    """ComfyUI's cancel exception class (its base class differs between versions)."""
    return mm.InterruptProcessingException


def is_oom(error: BaseException) -> bool:
    """True when this ComfyUI takes ``error`` for out of memory (never a cancel)."""
    if isinstance(error, interrupt_exception()):
        return False
    fn = getattr(mm, "is_oom", None)
    if fn is not None:
        return bool(fn(error))
    # Older ComfyUI: driver errors that subclass RuntimeError and say so.
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def cancel_check() -> Callable[[], bool]:
    """A ``cancel`` callable for :func:`dlgsanet.upscale`: raises ComfyUI's own interrupt.

    Raising ComfyUI's exception (rather than returning True, which makes the engine raise
    ``UpscaleCancelled``) lets ComfyUI report "interrupted" instead of an error.
    """
    def cancel() -> bool:
        mm.throw_exception_if_processing_interrupted()
        return False

    return cancel


class Progress:
    """``progress(done, total)`` for :func:`dlgsanet.upscale`, feeding a ComfyUI progress bar."""

    def __init__(self) -> None:
        self.bar = comfy.utils.ProgressBar(1)

    def __call__(self, done: int, total: int) -> None:
        self.bar.update_absolute(done, total)


def free_memory_for(required_bytes: int, device: torch.device) -> None:
    """Ask ComfyUI's memory manager to unload other models until ``required_bytes`` fit."""
    mm.free_memory(int(required_bytes), device)


def module_size(module: torch.nn.Module) -> int:
    return int(mm.module_size(module))


def release_memory() -> None:
    """Give cached device memory back (no-op on CPU)."""
    fn = getattr(mm, "soft_empty_cache", None)
    if fn is not None:
        fn()
