"""The ``Upscaler`` subclass: PIL in, PIL out, through ``dlgsanet``'s tiling engine in RGB.

* ``UpscalerDLGSANet`` is a *direct* ``Upscaler`` subclass: ``modelloader.load_upscalers`` only
  sees direct subclasses and calls ``cls(vars(cmd_opts).get("dlgsanet_models_path"))`` with no
  try/except around it, so the constructor never raises.
* A1111's own tiling helper feeds models BGR; DLGSANet was trained on RGB with an RGB mean
  shift, so images go through our own tiling engine in RGB; alpha by ``dlgsanet.alpha``'s rule.
* On any failure ``do_upscale`` returns the input unchanged (as A1111's built-in upscalers do)
  and logs why.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional

import numpy as np
import torch
import tqdm
from PIL import Image

import dlgsanet.alpha
from dlgsanet import CheckpointError, DLGSANetError, TileOutOfMemoryError, UpscaleCancelled
from modules import devices, shared
from modules.upscaler import Upscaler

from . import model_cache
from .discovery import MODEL_EXTENSIONS, NAME, discover
from .settings import OPT_ALPHA, OPT_KEEP_LOADED, opt, tiling

logger = logging.getLogger("DLGSANet")


def forge_prepare_free_memory() -> Optional[Callable[[], Any]]:
    """Forge's "make room before we allocate" hook (moved between versions); None on A1111."""
    try:
        from modules_forge.utils import prepare_free_memory
    except ImportError:
        try:
            from modules_forge.forge_util import prepare_free_memory
        except ImportError:
            return None
    return prepare_free_memory


class UpscalerDLGSANet(Upscaler):
    """DLGSANet checkpoints from ``models/DLGSANet`` (or ``--dlgsanet-models-path``) plus the
    bundled default model, one dropdown entry each."""

    def __init__(self, dirname: Optional[str] = None) -> None:
        self.name = NAME
        self.user_path = dirname
        self.scalers = []
        try:
            super().__init__()
        except Exception:  # an unexpected host (missing options...): keep going with what we need
            logger.warning("DLGSANet: the webui's Upscaler base failed to initialise", exc_info=True)
            self.model_path = os.path.join(getattr(shared, "models_path", "models"), NAME)
            self.scale, self.model_download_path = 1, None
        try:
            if self.model_path:
                os.makedirs(self.model_path, exist_ok=True)  # shows users where models go
        except OSError:
            pass
        try:
            self.prepare_free_memory = forge_prepare_free_memory()
        except Exception:  # a broken Forge module must not stop the webui
            logger.debug("DLGSANet: Forge's prepare_free_memory unavailable", exc_info=True)
            self.prepare_free_memory = None
        try:
            self.scalers = discover(self, self.find_models(ext_filter=MODEL_EXTENSIONS))
        except Exception:
            logger.exception("DLGSANet: listing models failed; no DLGSANet upscalers this session")
            self.scalers = []

    def load_model(self, path: str) -> torch.nn.Module:
        return model_cache.load(path)

    def do_upscale(self, img: Image.Image, selected_model: Optional[str]) -> Image.Image:
        """PIL in, PIL out at the model's native scale; on any failure the input comes back
        unchanged (as A1111's built-in upscalers do) and the reason is logged."""
        if not selected_model:
            return img
        if self.prepare_free_memory is not None:
            try:
                self.prepare_free_memory()
            except Exception:
                logger.debug("Forge prepare_free_memory failed", exc_info=True)
        try:
            model = self.load_model(selected_model)
        except CheckpointError as e:
            logger.error("DLGSANet: cannot load %s: %s", selected_model, e)
            return img
        except Exception:
            logger.exception("DLGSANet: unexpected error loading %s", selected_model)
            return img
        try:
            return upscale_pil(model, img)
        except UpscaleCancelled:
            return img
        except TileOutOfMemoryError as e:
            logger.error("DLGSANet: out of memory: %s (lower the tile size in Settings > Upscaling)", e)
            return img
        except DLGSANetError as e:
            logger.error("DLGSANet: upscale failed: %s", e)
            return img
        finally:
            if not opt(OPT_KEEP_LOADED):
                model_cache.cache.release()
            devices.torch_gc()


# ---------------------------------------------------------------------------------------------
# images: PIL <-> tensors, alpha kept; progress and cancel from the webui
# ---------------------------------------------------------------------------------------------
def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def _to_array(img: Image.Image) -> tuple[np.ndarray, str]:
    """HxWxC uint8 RGB or RGBA (when the image has transparency) and its PIL mode."""
    mode = "RGBA" if _has_alpha(img) else "RGB"
    return np.array(img if img.mode == mode else img.convert(mode), dtype=np.uint8), mode


def _cancel_requested() -> bool:
    state = getattr(shared, "state", None)
    return bool(state is not None and (state.interrupted or state.skipped))


class _ProgressBar:
    """A console tqdm bar over the tiles, like A1111's built-in tiled upscalers (hidden when
    ``opts.enable_upscale_progressbar`` is off). Callable as the engine's ``progress(done, total)``.

    The bar, and with it tqdm's clock, starts when the work starts (``with``), not at the first
    report: a bar made at the first finished tile shows that tile as done in no time (absurd
    tile/s rates). The total comes with the engine's first report.
    """

    def __init__(self) -> None:
        self.bar: Optional[tqdm.tqdm] = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            return
        if self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> "_ProgressBar":
        show = bool(getattr(getattr(shared, "opts", None), "enable_upscale_progressbar", True))
        self.bar = tqdm.tqdm(total=None, desc=NAME, unit="tile", disable=not show)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def upscale_pil(model: torch.nn.Module, img: Image.Image) -> Image.Image:
    """Colour through the tiling engine in RGB; alpha (if any) by ``dlgsanet.alpha``'s rule."""
    arr, mode = _to_array(img)
    images = torch.from_numpy(arr).unsqueeze(0).float().div_(255.0)  # [1,H,W,C] in 0..1
    with _ProgressBar() as progress:
        out = dlgsanet.alpha.upscale_rgba(
            model, images, channels_last=True, alpha=opt(OPT_ALPHA), output_dtype=torch.uint8,
            output_device=torch.device("cpu"), tiles=tiling(),
            progress=progress, cancel=_cancel_requested)
    return Image.fromarray(out[0].numpy(), mode)
