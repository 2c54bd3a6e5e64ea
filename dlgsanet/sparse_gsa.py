"""SparseGSA: sparse global self-attention (the global block of DLGSANet).

Restormer-style "transposed" attention: per head, a channels x channels map from
L2-normalised queries and keys (over pixels), made sparse with ReLU instead of softmax.
In eval mode it runs on TLC windows (see ``tlc.py``); in train mode on the whole patch.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import GDFN, ChannelLayerNorm
from .tlc import from_windows, to_windows


class SparseGSA(nn.Module):
    """qkv 1x1 + 3x3 depth-wise, ReLU(q k^T * temperature) v per head, 1x1 output projection."""

    def __init__(self, dim: int, heads: int, tlc_window: int) -> None:
        super().__init__()
        self.heads = heads
        self.tlc_window = tlc_window
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """qkv [..., 3C, h, w] -> attention output [..., C, h, w] (leading dims are batch-like)."""
        *lead, c3, h, w = qkv.shape
        c = c3 // 3
        q, k, v = qkv.reshape(-1, 3, self.heads, c // self.heads, h * w).unbind(1)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = torch.relu((q @ k.transpose(-2, -1)) * self.temperature)
        return (attn @ v).reshape(*lead, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_dwconv(self.qkv(x))
        if self.training or not self.tlc_window:
            out = self.attend(qkv)
        else:
            windows, layout = to_windows(qkv, self.tlc_window)
            out = from_windows(self.attend(windows), layout)
        return self.project_out(out)


class SparseGSABlock(nn.Module):
    """Pre-norm transformer block: x + SparseGSA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(self, dim: int, heads: int, ffn_expansion: float, tlc_window: int) -> None:
        super().__init__()
        self.norm3 = ChannelLayerNorm(dim)
        self.restormer_attn = SparseGSA(dim, heads, tlc_window)
        self.norm4 = ChannelLayerNorm(dim)
        self.restormer_ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.restormer_attn(self.norm3(x)) + x
        return self.restormer_ffn(self.norm4(x)) + x
