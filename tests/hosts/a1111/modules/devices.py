"""Stand-in for A1111 1.10 ``modules/devices.py`` (and the device part of ``modules/shared_init.py``).

``get_device_for(task)`` returns the CPU when ``task`` or ``all`` is in ``--use-cpu``, else the
optimal device (CUDA, then MPS, then CPU); ``torch_gc`` empties the CUDA cache; ``dtype`` is
float16 unless ``--no-half``. ``torch_gc_calls`` counts calls (stand-in only).
"""
from __future__ import annotations

import contextlib

import torch

from modules import shared

cpu: torch.device = torch.device("cpu")
device: torch.device | None = None
device_esrgan: torch.device | None = None
dtype: torch.dtype = torch.float16
torch_gc_calls = 0  # stand-in only


def has_mps() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def get_optimal_device_name() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if has_mps():
        return "mps"
    return "cpu"


def get_optimal_device() -> torch.device:
    return torch.device(get_optimal_device_name())


def get_device_for(task: str) -> torch.device:
    if task in shared.cmd_opts.use_cpu or "all" in shared.cmd_opts.use_cpu:
        return cpu
    return get_optimal_device()


def torch_gc() -> None:
    global torch_gc_calls
    torch_gc_calls += 1
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def without_autocast(disable: bool = False):
    return contextlib.nullcontext()
