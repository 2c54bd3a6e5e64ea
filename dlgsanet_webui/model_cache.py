"""Loaded models: on the webui's device, in the chosen precision, kept between calls.

Extras can chain two upscalers, so two models stay loaded (a few MB each). They are released
when the user asks (Settings: keep loaded off), when a Stable Diffusion checkpoint is loaded and
when the script is unloaded (Reload UI).
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

import torch

import dlgsanet
import dlgsanet.devices
from dlgsanet import CheckpointError
from modules import devices, shared

from .settings import OPT_PRECISION, opt

logger = logging.getLogger("DLGSANet")

DEVICE_TASK = "dlgsanet"  # `--use-cpu dlgsanet` (or `all`) runs it on the CPU
CACHE_SIZE = 2


class ModelCache:
    """Up to ``capacity`` loaded models, keyed on file identity, device and dtype.

    The key includes the file's size and modification time, so replacing a file on disk takes
    effect on the next upscale without a restart.
    """

    def __init__(self, capacity: int = CACHE_SIZE) -> None:
        self.capacity = capacity
        self._models: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        try:
            stat = os.stat(path)
        except OSError:
            raise CheckpointError(f"model file not found: {path} (moved or deleted since start-up? "
                                  f"use Reload UI to refresh the list)") from None
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, str(device), dtype)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            model = dlgsanet.load_model(path, device=device, dtype=dtype)
            self._models[key] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return model

    def release(self) -> int:
        """Drop every loaded model; returns how many there were."""
        with self._lock:
            count = len(self._models)
            self._models.clear()
        return count

    def __len__(self) -> int:
        return len(self._models)


cache = ModelCache()
_warned: set[str] = set()  # precision fallbacks already logged since the script was loaded


def release_models(*_args: object) -> None:
    """Free the loaded DLGSANet models (and the GPU memory they held). Safe to call any time."""
    if cache.release():
        devices.torch_gc()


def start() -> None:
    """A (re)loaded script starts with no models loaded and warns afresh."""
    cache.release()
    _warned.clear()


def device() -> torch.device:
    """``devices.get_device_for`` honours ``--use-cpu dlgsanet|all`` on A1111 (Forge: its device)."""
    get_device_for = getattr(devices, "get_device_for", None)
    if get_device_for is not None:
        try:
            return torch.device(get_device_for(DEVICE_TASK))
        except Exception:
            logger.debug("devices.get_device_for failed; using shared.device", exc_info=True)
    return torch.device(getattr(shared, "device", None) or "cpu")


def dtype(on: torch.device) -> torch.dtype:
    """The precision setting's dtype, or fp32 (logged once) where it cannot run or --no-half is set."""
    chosen = dlgsanet.devices.precision_dtype(opt(OPT_PRECISION))
    if chosen == torch.float32:
        return chosen
    reason = dlgsanet.devices.dtype_problem(chosen, on)
    if reason is None and chosen == torch.float16 and getattr(getattr(shared, "cmd_opts", None), "no_half", False):
        reason = "--no-half is set"
    if reason:
        if reason not in _warned:
            _warned.add(reason)
            logger.warning("DLGSANet: %s; using fp32", reason)
        return torch.float32
    return chosen


def load(path: str) -> torch.nn.Module:
    """The model of ``path`` on the webui's device in the chosen precision (cached)."""
    on = device()
    return cache.get(path, on, dtype(on))
