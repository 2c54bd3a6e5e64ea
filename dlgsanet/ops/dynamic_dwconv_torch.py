"""Pure-PyTorch dynamic depth-wise convolution (runs on any device, differentiable).

Shift-and-accumulate: one fused multiply-add over the whole feature map per kernel
offset (K*K of them), reading shifted views of the zero-padded input. Unlike an
``unfold``-based version it never materialises the K*K-times larger patch tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dynamic_dwconv_torch(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """out[n,c,h,w] = sum_{i,j} kernels[n, c // (C/G), i, j, h, w] * x[n, c, h+i-p, w+j-p].

    x: ``[N, C, H, W]``; kernels: ``[N, G, K, K, H, W]`` with C divisible by G, K odd, p = K // 2.
    """
    n, c, h, w = x.shape
    groups, k = kernels.shape[1], kernels.shape[2]
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad)).view(n, groups, c // groups, h + 2 * pad, w + 2 * pad)
    kern = kernels.unsqueeze(2)  # [N, G, 1, K, K, H, W]: broadcast over the channels of a group
    out = None
    for i in range(k):
        for j in range(k):
            term = kern[:, :, :, i, j] * xp[:, :, :, i:i + h, j:j + w]
            out = term if out is None else out.add_(term) if not torch.is_grad_enabled() else out + term
    return out.reshape(n, c, h, w)
