"""DLGSANet in AUTOMATIC1111 / Forge: the modules behind ``scripts/dlgsanet_upscaler.py``.

A1111 imports every ``scripts/*.py`` by file path, with the extension root on sys.path only
while that file is imported; a bare ``import scripts.x`` would find the webui's own ``scripts/``.
So the script's parts live in this package (a unique top-level name), imported whole by the
script at its top, together with ``dlgsanet``; inside it, imports are relative.

* ``settings``: our options in Settings > Upscaling, read with defaults;
* ``discovery``: checkpoint files -> dropdown entries;
* ``model_cache``: loaded models, device and precision;
* ``upscaler``: the ``Upscaler`` subclass (PIL in, PIL out);
* ``esrgan``: DLGSANet files in ``models/ESRGAN`` through the built-in ESRGAN upscaler.

The webui re-executes the script on Reload UI, not this package: :func:`wire` is what each
execution of the script must do again.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from modules import script_callbacks

from . import esrgan, model_cache, settings
from .upscaler import UpscalerDLGSANet

__all__ = ["UpscalerDLGSANet", "wire"]

logger = logging.getLogger("DLGSANet")


def wire() -> None:
    """Settings, callbacks (the webui clears them before it loads scripts), spandrel, the ESRGAN
    loader and the API's options model; each step optional, none of them raises."""
    model_cache.start()
    try:
        settings.register_settings()
    except Exception:
        logger.warning("DLGSANet: could not register settings; defaults will be used", exc_info=True)
    for hook, callback in (("on_ui_settings", settings.register_settings),
                           ("on_script_unloaded", model_cache.release_models),
                           ("on_model_loaded", model_cache.release_models)):
        register: Optional[Callable[..., None]] = getattr(script_callbacks, hook, None)
        if register is not None:
            try:
                register(callback, name=f"dlgsanet_{hook}")
            except TypeError:  # older webui without the name= keyword
                register(callback)
    esrgan.register_spandrel()
    for step in (esrgan.wrap_load_spandrel_model, settings.extend_api_options_model):
        try:
            step()
        except Exception:
            logger.warning("DLGSANet: %s failed", step.__name__, exc_info=True)
