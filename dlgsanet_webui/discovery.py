"""Checkpoint files -> dropdown entries: the bundled model(s), then the models folders' files.

Each file is inspected once at start-up (headers only, ``dlgsanet.discovery``), so the names
carry the preset and the scale ("DLGSANet Tiny x4 (name)"): A1111 reads "x4" from the name to
fill in "Scale by". A file that cannot be used is logged and skipped, never raised: the webui
calls the upscaler's constructor with no try/except around it.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Optional

import dlgsanet.model.config
import dlgsanet.discovery
from dlgsanet import CheckpointError, DLGSANetConfig
from modules import modelloader
from modules.upscaler import UpscalerData

logger = logging.getLogger("DLGSANet")

NAME = "DLGSANet"
MODEL_EXTENSIONS = [".safetensors", ".pth", ".pt", ".ckpt"]
PRESET_TITLES = {"tiny": "Tiny", "light": "Light", "large": "Large"}


def inspect_checkpoint(path: str) -> DLGSANetConfig:
    """The configuration of a checkpoint file, from its headers only (raises CheckpointError if unusable)."""
    config = dlgsanet.discovery.inspect_file(path)
    if config.in_chans != 3:
        raise CheckpointError(f"{os.path.basename(path)}: a {config.in_chans}-channel model; only RGB "
                              f"(3-channel) DLGSANet models can upscale webui images")
    return config


def scaler_label(config: DLGSANetConfig, detail: str) -> str:
    """"DLGSANet Tiny x4 (detail)": preset and scale first, so A1111's regex finds "x4"."""
    preset = dlgsanet.model.config.preset_name(config)
    return f"{NAME} {PRESET_TITLES.get(preset, 'Custom')} x{config.scale} ({detail})"


def relative_name(path: str, roots: Iterable[Optional[str]]) -> str:
    """``path`` without its suffix, relative to the first of ``roots`` that holds it."""
    for root in roots:
        if root:
            try:
                rel = os.path.relpath(path, root)
            except ValueError:  # another drive on Windows
                continue
            if not rel.startswith(".."):
                return os.path.splitext(rel)[0].replace(os.sep, "/")
    return os.path.splitext(path)[0]


def discover(upscaler: Any, found: Iterable[str]) -> list[UpscalerData]:
    """One entry per usable checkpoint: the bundled ones, then ``found`` (the webui's file list);
    unique labels (a file name met twice gets its folder)."""
    entries: list[tuple[str, str]] = [(str(p), "built-in") for p in dlgsanet.discovery.bundled_models()]
    for path in found:
        if not path.startswith(("http://", "https://")):
            entries.append((path, modelloader.friendly_name(path)))
    roots = (upscaler.user_path, upscaler.model_path)
    scalers: list[UpscalerData] = []
    taken: set[str] = set()
    for path, detail in entries:
        try:
            config = inspect_checkpoint(path)
        except Exception as e:
            logger.warning("DLGSANet: skipping %s: %s", path, e)
            continue
        label = scaler_label(config, detail)
        if label in taken:  # same file name in another folder: show where it is
            label = scaler_label(config, relative_name(path, roots))
        suffix = 2
        while label in taken:
            label = scaler_label(config, f"{relative_name(path, roots)} {suffix}")
            suffix += 1
        taken.add(label)
        scalers.append(UpscalerData(label, path, upscaler, scale=config.scale))
    return scalers
