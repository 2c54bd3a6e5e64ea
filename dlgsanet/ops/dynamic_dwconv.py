"""The dynamic depth-wise convolution of MHDLSA, dispatched to the best available backend.

Backends: ``torch`` (pure PyTorch, everywhere). The CUDA kernels launched through cupy plug in
here as the ``cupy`` backend (see ``kernels/``); ``DLGSANET_BACKEND=auto|cupy|torch`` or the
``backend`` argument forces a choice.
"""
from __future__ import annotations

from typing import Optional

import torch

from .dynamic_dwconv_torch import dynamic_dwconv_torch


def _check(x: torch.Tensor, kernels: torch.Tensor) -> None:
    if x.dim() != 4 or kernels.dim() != 6:
        raise ValueError(f"dynamic_dwconv expects x [N,C,H,W] and kernels [N,G,K,K,H,W], got "
                         f"{tuple(x.shape)} and {tuple(kernels.shape)}")
    n, c, h, w = x.shape
    kn, g, k1, k2, kh, kw = kernels.shape
    if kn != n or (kh, kw) != (h, w) or k1 != k2 or k1 % 2 == 0 or c % g:
        raise ValueError(f"dynamic_dwconv: incompatible shapes x {tuple(x.shape)} and kernels "
                         f"{tuple(kernels.shape)} (need same N, H, W; odd square K; C divisible by G)")


def dynamic_dwconv(x: torch.Tensor, kernels: torch.Tensor, *, backend: Optional[str] = None) -> torch.Tensor:
    """Per-pixel depth-wise convolution with zero padding K // 2 (see ``dynamic_dwconv_torch``)."""
    _check(x, kernels)
    return dynamic_dwconv_torch(x, kernels)
