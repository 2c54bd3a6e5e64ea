"""Load DLGSANet Model's work: a DLGSANet checkpoint from ``upscale_models`` (or the bundled model).

The list is read through ``folder_paths``, so folders added in ``extra_model_paths.yaml`` count.
``upscale_models`` is shared with ESRGAN, SwinIR and friends, so only DLGSANet checkpoints are
listed (``dlgsanet.discovery``), plus any file whose name says "dlgsanet" (so a broken download
shows up and explains itself on load).
"""
from __future__ import annotations

import logging
from pathlib import Path

import folder_paths

from ..dlgsanet import DLGSANet, load_model
from ..dlgsanet.devices import pick_dtype
from ..dlgsanet.discovery import bundled_models as bundled_files, is_dlgsanet_file
from . import host

log = logging.getLogger("DLGSANet")

FOLDER = "upscale_models"
BUNDLED_PREFIX = "(bundled) "


def bundled_models() -> dict[str, Path]:
    """Display name -> path of the models shipped inside the pack."""
    return {BUNDLED_PREFIX + f.name: f for f in bundled_files()}


def model_choices() -> list[str]:
    """Bundled models first, then DLGSANet files of every ``upscale_models`` folder."""
    found = []
    for name in folder_paths.get_filename_list(FOLDER):
        path = folder_paths.get_full_path(FOLDER, name)
        if path and ("dlgsanet" in name.lower() or is_dlgsanet_file(path)):
            found.append(name)
    return list(bundled_models()) + found


def resolve(model_name: str) -> Path:
    bundled = bundled_models()
    if model_name in bundled:
        return bundled[model_name]
    return Path(folder_paths.get_full_path_or_raise(FOLDER, model_name))


def load(model_name: str, precision: str) -> DLGSANet:
    """What "Load DLGSANet Model" does: the checkpoint, on ComfyUI's offload device."""
    path = resolve(model_name)
    dtype = pick_dtype(precision, host.compute_device())
    model = load_model(path, device=host.offload_device(), dtype=dtype)
    log.info("DLGSANet: loaded %s (%s x%d, %s)", path.name, model.preset or "custom",
             model.scale, str(dtype).replace("torch.", ""))
    return model
