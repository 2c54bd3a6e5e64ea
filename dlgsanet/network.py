"""DLGSANet: shallow 3x3 embedding, residual groups of (MHDLSA, SparseGSA) blocks, pixel shuffle.

Module and parameter names follow the official implementation ("sparseedge" blocks,
``pixelshuffledirect`` upsampler) so official state dicts load without renaming.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .config import RGB_MEAN, DLGSANetConfig, preset_name
from .mhdlsa import MHDLSABlock
from .sparse_gsa import SparseGSA, SparseGSABlock


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution without bias from RGB to ``dim`` features."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ResidualGroup(nn.Module):
    """``blocks`` pairs of (local, global) blocks and a 3x3 conv, with a skip connection."""

    def __init__(self, config: DLGSANetConfig) -> None:
        super().__init__()
        c = config
        body: list[nn.Module] = []
        for _ in range(c.blocks):
            body.append(MHDLSABlock(c.dim, c.window, c.local_heads, c.ffn_expansion))
            body.append(SparseGSABlock(c.dim, c.global_heads, c.ffn_expansion, c.tlc_window))
        body.append(nn.Conv2d(c.dim, c.dim, 3, padding=1))
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class DLGSANet(nn.Module):
    """The super-resolution network. ``forward`` maps [B,3,H,W] in 0..1 to [B,3,sH,sW] (unclamped).

    In eval mode the global attention uses TLC windows (as the official test code does); in
    train mode it attends over the whole input, as in official training.
    """

    def __init__(self, config: Optional[DLGSANetConfig] = None) -> None:
        super().__init__()
        self.config = config = config or DLGSANetConfig()
        self.scale = config.scale
        self.preset = preset_name(config)
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.overlap_embed = nn.Sequential(OverlapPatchEmbed(config.in_chans, config.dim))
        self.deep_feature_extraction = nn.Sequential(
            *[ResidualGroup(config) for _ in range(config.groups)],
            nn.Conv2d(config.dim, config.dim, 3, padding=1),
        )
        self.upsample = nn.Sequential(
            nn.Conv2d(config.dim, config.scale ** 2 * config.in_chans, 3, padding=1),
            nn.PixelShuffle(config.scale),
        )

    def set_tlc_window(self, tlc_window: Optional[int]) -> None:
        """Change the test-time TLC window (None or 0 turns TLC off: whole-image attention)."""
        for m in self.modules():
            if isinstance(m, SparseGSA):
                m.tlc_window = tlc_window or 0
        self.config = self.config.with_(tlc_window=tlc_window or 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(dtype=x.dtype)
        feat = self.overlap_embed(x - mean)
        feat = self.deep_feature_extraction(feat) + feat
        return self.upsample(feat) + mean

    def extra_repr(self) -> str:
        return f"preset={self.preset}, config={self.config}"
