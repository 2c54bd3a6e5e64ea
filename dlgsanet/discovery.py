"""Which model files are DLGSANet checkpoints: the one test both hosts' model lists use.

Hosts share their model folders with other architectures (ComfyUI's ``upscale_models``, A1111's
``models/ESRGAN``), and they list them again whenever a menu is drawn. So a file is recognised
from its tensor names and shapes only (:func:`dlgsanet.checkpoint.inspect_config`: headers,
never an unrestricted unpickle), and the answer is remembered until the file changes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from .checkpoint import WEIGHTS_DIR, inspect_config
from .model.config import DLGSANetConfig
from .errors import CheckpointError

#: (real path, size, mtime) -> the file's configuration, or why it is not a usable checkpoint.
_inspected: dict[tuple[str, int, int], Union[DLGSANetConfig, str]] = {}


def bundled_models() -> list[Path]:
    """The checkpoints shipped inside the package, by file name (the same list for every host)."""
    return sorted(WEIGHTS_DIR.glob("*.safetensors")) if WEIGHTS_DIR.is_dir() else []


def inspect_file(path: Union[str, os.PathLike]) -> DLGSANetConfig:
    """The configuration of a checkpoint file from its headers; any problem is a CheckpointError.

    Remembered per file identity (path, size, modification time), so a replaced file is read again.
    """
    name = os.path.basename(os.fspath(path))
    try:
        stat = os.stat(path)
    except OSError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _inspected:
        try:
            _inspected[key] = inspect_config(path)
        except CheckpointError as e:
            _inspected[key] = str(e)
        except Exception as e:  # anything unforeseen in a hostile file still means "not usable"
            _inspected[key] = f"{name}: cannot be read ({type(e).__name__}: {e})"
    found = _inspected[key]
    if isinstance(found, str):
        raise CheckpointError(found)
    return found


def is_dlgsanet_file(path: Union[str, os.PathLike]) -> bool:
    """True for a readable DLGSANet checkpoint (see :func:`inspect_file`)."""
    try:
        inspect_file(path)
    except CheckpointError:
        return False
    return True
