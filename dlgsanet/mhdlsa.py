"""MHDLSA: multi-head dynamic local self-attention (the local block of DLGSANet).

A hyper-network predicts a K x K depth-wise kernel for every pixel and every head-group of
channels; the feature map is then filtered with those per-pixel kernels. This is the
"dynamic depth-wise convolution" whose kernel dominates the model's run time.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import GDFN, ChannelLayerNorm
from .ops import dynamic_dwconv


class DynamicDWConv(nn.Module):
    """Hyper-network (1x1 reduce, KxK depth-wise, 1x1 to K*K*G) plus the dynamic convolution.

    Official name: ``IDynamicDWConv``; G = dim / heads kernels, channel c uses kernel c // heads.
    """

    def __init__(self, dim: int, kernel_size: int, heads: int, reduction: int = 4) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = dim // heads
        hidden = dim // reduction
        self.conv1 = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden),
        )
        self.conv2 = nn.Sequential(nn.Conv2d(hidden, kernel_size * kernel_size * self.groups, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        k = self.kernel_size
        kernels = self.conv2(self.conv1(x)).view(n, self.groups, k, k, h, w)
        return dynamic_dwconv(x, kernels)


class MHDLSA(nn.Module):
    """1x1 projection, dynamic depth-wise conv, 1x1 projection (official ``IDynamicDWConvBlock``)."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 1, bias=False)
        self.conv = DynamicDWConv(dim, window, heads)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv(self.conv0(x)))


class MHDLSABlock(nn.Module):
    """Pre-norm transformer block: x + MHDLSA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(self, dim: int, window: int, heads: int, ffn_expansion: float) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.IDynamicDWConv = MHDLSA(dim, window, heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.IDynamic_ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.IDynamicDWConv(self.norm1(x)) + x
        return self.IDynamic_ffn(self.norm2(x)) + x
