"""DLGSANet files in ``models/ESRGAN``: loadable through the webui's built-in ESRGAN upscaler.

That is the only path on forks that list ESRGAN-family upscalers only. Two steps: DLGSANet is
registered with spandrel, and ``modelloader.load_spandrel_model`` is wrapped so that DLGSANet
pickles are read by our own reader (A1111's ``torch.load`` refuses files saved by a current torch).
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import dlgsanet
import dlgsanet.checkpoint
import dlgsanet.torch_pickle
import dlgsanet_spandrel
from dlgsanet import CheckpointError
from modules import modelloader

logger = logging.getLogger("DLGSANet")

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def register_spandrel() -> None:
    """Let A1111's built-in (ESRGAN-family) path load DLGSANet files too; optional."""
    try:
        dlgsanet_spandrel.register(dlgsanet.is_dlgsanet_state_dict, dlgsanet.model_from_state_dict)
    except Exception:
        logger.warning("DLGSANet: could not register with spandrel (models/ESRGAN will not load "
                       "DLGSANet files; the DLGSANet entries still work)", exc_info=True)


def dlgsanet_descriptor(path: Any, *, device: Any = None, prefer_half: bool = False, dtype: Any = None,
                        **_ignored: Any) -> Any:
    """A spandrel descriptor for a DLGSANet pickle, read by our own reader; None when the file
    is not a DLGSANet checkpoint we can read (the webui's loader then decides, as before)."""
    import spandrel

    name = os.path.basename(str(path))
    try:
        # Names and shapes only (no tensor data): cheap for any file.
        raw = dlgsanet.torch_pickle.read_torch_file(Path(path), shapes_only=True)
        if not dlgsanet.is_dlgsanet_state_dict(dlgsanet.checkpoint.unwrap_state_dict(raw, name=name)):
            return None
    except CheckpointError:
        return None
    # Ours: any problem from here on is reported with our message (ESRGAN's do_upscale logs it).
    state_dict = dlgsanet.checkpoint.read_state_dict(path)
    descriptor = spandrel.ModelLoader(device=device).load_from_state_dict(state_dict)
    if prefer_half and descriptor.supports_half:
        descriptor.model.half()
    if dtype:
        descriptor.model.to(dtype=dtype)
    descriptor.model.eval()
    logger.info("DLGSANet: %s loaded with DLGSANet's own checkpoint reader", name)
    return descriptor


def wrap_load_spandrel_model() -> None:
    """DLGSANet pickles in ``models/ESRGAN`` (ESRGAN, DAT, ... all load through
    ``modelloader.load_spandrel_model``) are read by our reader; every other file as before.

    A1111's ``modules/safe.py`` replaces ``torch.load`` (which spandrel calls) with a checker that
    returns None for any file saved by a current torch (zip entries it does not know); spandrel
    then fails with a TypeError and the webui falls back to a plain LANCZOS resize. Wrapped once:
    after Reload UI the webui's own function is wrapped again, never our wrapper.
    """
    original = getattr(modelloader, "load_spandrel_model", None)
    if original is None:
        return
    original = getattr(original, "_dlgsanet_original", original)

    @functools.wraps(original)
    def load_spandrel_model(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).lower().endswith(PICKLE_SUFFIXES):
            descriptor = dlgsanet_descriptor(path, **kwargs)
            if descriptor is not None:
                return descriptor
        return original(path, *args, **kwargs)

    load_spandrel_model._dlgsanet_original = original  # type: ignore[attr-defined]
    modelloader.load_spandrel_model = load_spandrel_model
