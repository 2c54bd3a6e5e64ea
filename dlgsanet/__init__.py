"""DLGSANet super-resolution: a faithful, host-independent, run-anywhere implementation.

Public API: :func:`load_model`, :func:`save_model`, :func:`upscale` (``outscale=`` for any
factor), :func:`upscale_rgba`, :func:`upscale_rgba_to` (any size, RGBA, channels-last),
:func:`resize` (the antialiased filter used for that), :func:`target_size`,
:class:`DLGSANet`, :class:`DLGSANetConfig`, and the exceptions in :mod:`dlgsanet.errors`.
"""
from .checkpoint import (config_from_state_dict, default_model_path, is_dlgsanet_state_dict,
                         load_model, model_from_state_dict, read_state_dict, save_model)
from .model.config import PRESETS, DLGSANetConfig, preset_config
from .alpha import upscale_rgba
from .errors import (CheckpointError, DLGSANetError, ImageInputError, OutputSizeError, TileOutOfMemoryError,
                     TileSettingsError, UpscaleCancelled)
from .inference import upscale
from .resample import resize, target_size, upscale_rgba_to
from .model.network import DLGSANet
from . import cpu  # noqa: F401  (registers the CPU inference pass with the network)

__version__ = "0.1.0"

__all__ = [
    "load_model", "save_model", "read_state_dict", "default_model_path", "is_dlgsanet_state_dict",
    "config_from_state_dict", "model_from_state_dict",
    "DLGSANet", "DLGSANetConfig", "PRESETS", "preset_config", "upscale", "upscale_rgba",
    "upscale_rgba_to", "resize", "target_size",
    "DLGSANetError", "CheckpointError", "ImageInputError", "UpscaleCancelled", "TileOutOfMemoryError",
    "TileSettingsError", "OutputSizeError",
]
