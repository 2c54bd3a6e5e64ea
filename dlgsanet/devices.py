"""Choosing a device and a storage precision from user-facing names ("auto", "fp16", ...)."""
from __future__ import annotations

from typing import Union

import torch

from .errors import DLGSANetError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(name: Union[str, torch.device, None] = "auto") -> torch.device:
    """``auto`` -> CUDA, then Apple MPS, then CPU; anything else is checked, not guessed."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DLGSANetError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DLGSANetError("CUDA was requested but this torch build sees no CUDA device; use --device cpu")
    return device


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 (DLGSANet's attention is not validated in fp16); others as named."""
    if precision in (None, "", "auto"):
        return torch.float32
    try:
        dtype = PRECISIONS[precision]
    except KeyError:
        raise DLGSANetError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16") from None
    if dtype == torch.float16 and device.type == "cpu":
        raise DLGSANetError("fp16 on the CPU is slow and poorly supported; use fp32 or bf16 there")
    return dtype
