"""Choosing a device and a storage precision from user-facing names ("auto", "fp16", ...)."""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Union

import torch
import torch.nn.functional as F

from .errors import DLGSANetError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: What the hosts' precision menus offer, in menu order ("auto" = fp32, see :func:`precision_dtype`).
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


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


@lru_cache(maxsize=None)
def _probe(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """None when DLGSANet's kinds of layers run in ``dtype`` on ``device``, else torch's reason.

    Some CPUs cannot run bf16 convolutions at all (oneDNN needs AVX-512 or AVX-NE-CONVERT), so
    a precision that "exists" may still fail deep inside torch; a tiny probe finds out up front.
    """
    try:
        x = torch.rand(1, 4, 6, 6, device=device).to(dtype)
        y = F.conv2d(x, torch.rand(4, 1, 3, 3, device=device).to(dtype), padding=1, groups=4)
        y = F.conv2d(y, torch.rand(4, 4, 1, 1, device=device).to(dtype))
        y = F.layer_norm(y.permute(0, 2, 3, 1), (4,)).permute(0, 3, 1, 2)
        (y.flatten(2) @ y.flatten(2).transpose(1, 2)).sum().item()
        return None
    except (RuntimeError, TypeError, NotImplementedError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__


def dtype_problem(dtype: torch.dtype, device: torch.device) -> Optional[str]:
    """Why ``dtype`` cannot be used on ``device`` here (None when it can)."""
    if dtype == torch.float32:
        return None
    if dtype == torch.float16 and device.type == "cpu":
        return "fp16 on the CPU is slow and poorly supported"
    reason = _probe(torch.device(device), dtype)
    return None if reason is None else f"{str(dtype).replace('torch.', '')} does not run on this {device.type} ({reason})"


def precision_dtype(precision: Optional[str]) -> torch.dtype:
    """The dtype a precision name stands for: ``auto`` is float32 (DLGSANet's attention is not
    validated in fp16); an unknown name is an error."""
    if precision in (None, "", "auto"):
        return torch.float32
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise DLGSANetError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16") from None


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """:func:`precision_dtype`, checked to work on ``device`` so that a bad choice fails here
    with a clear message."""
    dtype = precision_dtype(precision)
    problem = dtype_problem(dtype, device)
    if problem:
        raise DLGSANetError(f"{problem}; use fp32 (or auto) here")
    return dtype
