"""MHDLSA: multi-head dynamic local self-attention (the local block of DLGSANet).

A hyper-network predicts a K x K depth-wise kernel for every pixel and every head-group of
channels; the feature map is then filtered with those per-pixel kernels ("dynamic depth-wise
convolution", :func:`dlgsanet.ops.dynamic_dwconv`: the cupy kernels, or the PyTorch autograd
Function).

The block works channels-last, but the dynamic conv wants channel planes (NCHW), where each
shifted view is a plain strided slice; the two 1x1 convolutions around it (``conv0``, ``conv1``)
do the transposition for free by multiplying with transposed operands.

CPU inference computes the same block band by band of rows (``dlgsanet.cpu.mhdlsa``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import GDFN, ChannelLayerNorm, matrix
from ..ops import dynamic_dwconv, hyper_convs


class DynamicDWConv(nn.Module):
    """Hyper-network (1x1 reduce, KxK depth-wise, 1x1 to K*K*G) plus the dynamic convolution.

    Official name: ``IDynamicDWConv``; G = dim / heads kernels, channel c uses kernel c // heads.
    Input and output are NCHW.
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

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The hyper-network up to its last 1x1 conv: [N, C, H, W] -> [N, C/4, H, W]."""
        n, c, h, w = x.shape
        reduce = self.conv1[0]
        t = torch.matmul(matrix(reduce), x.reshape(n, c, h * w))
        if reduce.bias is not None:
            t = t + reduce.bias.view(-1, 1)
        return self.from_reduced(t.view(n, -1, h, w))

    def from_reduced(self, t: torch.Tensor) -> torch.Tensor:
        """The hyper-network after its first 1x1 conv (``t``: that conv's output, NCHW)."""
        return hyper_convs.depthwise(t, self.conv1[1])

    def per_pixel_kernels(self, hidden: torch.Tensor) -> torch.Tensor:
        """The hyper-network's last 1x1 conv, ``[N, C/4, H, W] -> [N, K*K*G, H, W]``."""
        return hyper_convs.pointwise(hidden, self.conv2[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        k = self.kernel_size
        kernels = self.per_pixel_kernels(self.hidden(x)).view(n, self.groups, k, k, h, w)
        return dynamic_dwconv(x, kernels)


class MHDLSA(nn.Module):
    """1x1 projection, dynamic depth-wise conv, 1x1 projection (official ``IDynamicDWConvBlock``).

    Channels-last in and out; ``forward(x, residual)`` returns ``residual + MHDLSA(x)``.
    """

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 1, bias=False)
        self.conv = DynamicDWConv(dim, window, heads)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        # conv0 straight into channel planes: W0 @ x^T, the transpose is free inside the GEMM.
        planes = torch.matmul(matrix(self.conv0), x.reshape(b, h * w, c).transpose(1, 2))
        planes = self.conv(planes.view(b, c, h, w))
        # conv1 straight back to channels-last, with the residual added by the GEMM.
        back = matrix(self.conv1).t().expand(b, -1, -1)
        out = torch.baddbmm(residual.reshape(b, h * w, c), planes.reshape(b, c, h * w).transpose(1, 2), back)
        return out.view(b, h, w, c)


class MHDLSABlock(nn.Module):
    """Pre-norm transformer block: x + MHDLSA(LN(x)), then x + GDFN(LN(x)); channels-last."""

    def __init__(self, dim: int, window: int, heads: int, ffn_expansion: float) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.IDynamicDWConv = MHDLSA(dim, window, heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.IDynamic_ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.IDynamicDWConv(self.norm1(x), residual=x)
        return self.IDynamic_ffn(self.norm2(x), residual=x)
