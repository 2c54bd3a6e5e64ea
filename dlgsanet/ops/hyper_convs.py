"""The hyper-network's small convolutions (MHDLSA's per-pixel kernel maker), fast in CPU training.

Why an op of their own: the hyper-network works on few channels (dim/4 in, K*K*G out), where
oneDNN's NCHW convolutions, and above all their backward, are slow on the CPU (figures in
docs/performance.md). In CPU training (:func:`dlgsanet.ops.cpu_training.applies`) the last 1x1
conv runs as one batched GEMM and the KxK depth-wise conv on a channels-last copy; everywhere
else, inference included, the module itself runs, so the model's bits do not change.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .cpu_training import applies


def pointwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a 1x1 ``conv`` on NCHW ``x``; one batched GEMM in CPU training."""
    if not applies(x, conv.weight):
        return conv(x)
    n, c, h, w = x.shape
    weight = conv.weight.view(conv.out_channels, c).expand(n, -1, -1)
    flat = x.reshape(n, c, h * w)
    out = torch.bmm(weight, flat) if conv.bias is None else torch.baddbmm(conv.bias.view(1, -1, 1), weight, flat)
    return out.view(n, -1, h, w)


def depthwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a depth-wise ``conv``; on a channels-last copy in CPU training (the result
    is NCHW-shaped either way)."""
    if applies(x, conv.weight):
        x = x.contiguous(memory_format=torch.channels_last)
    return conv(x)
