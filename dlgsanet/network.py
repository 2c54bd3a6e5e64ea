"""DLGSANet: shallow 3x3 embedding, residual groups of (MHDLSA, SparseGSA) blocks, pixel shuffle.

Module and parameter names follow the official implementation ("sparseedge" blocks,
``pixelshuffledirect`` upsampler) so official state dicts load without renaming.

Between the first and the last convolution, feature maps are channels-last ``[B, H, W, C]``
(see ``layers.py`` for why); ``DLGSANet.forward`` takes and returns ordinary NCHW images.
The inner modules (groups, blocks) therefore take channels-last maps.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .config import RGB_MEAN, DLGSANetConfig, preset_name
from .layers import Workspace, cpu_inference, inplace_ok, spatial
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
    """``blocks`` pairs of (local, global) blocks and a 3x3 conv, with a skip connection.

    Channels-last in and out (``body`` is kept as the official ``nn.Sequential`` for its key
    names, but its last conv is applied channels-last, so call the group, not ``body``).
    """

    def __init__(self, config: DLGSANetConfig) -> None:
        super().__init__()
        c = config
        body: list[nn.Module] = []
        for _ in range(c.blocks):
            body.append(MHDLSABlock(c.dim, c.window, c.local_heads, c.ffn_expansion))
            body.append(SparseGSABlock(c.dim, c.global_heads, c.ffn_expansion, c.tlc_window))
        body.append(nn.Conv2d(c.dim, c.dim, 3, padding=1))
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor, workspace: Optional[Workspace] = None) -> torch.Tensor:
        y = x
        for block in self.body[:-1]:
            y = block(y, workspace)
        y = spatial(y, self.body[-1])
        return y.add_(x) if inplace_ok(y) else y + x


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
        if x.shape[0] > 1 and cpu_inference(x, self):
            # CPU inference gains nothing from batching (every op already has a whole image of
            # work), and image by image every image gets exactly the bits it gets alone, whatever
            # GEMM kernels the batch size would have selected.
            return torch.cat([self._forward(image) for image in x.split(1)])
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(dtype=x.dtype)
        shifted = (x - mean).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        feat = spatial(shifted, self.overlap_embed[0].proj)                   # [B, H, W, C]
        # CPU inference: the blocks write their outputs into buffers allocated once per pass.
        workspace = Workspace() if cpu_inference(feat, self) else None
        deep = feat
        for group in self.deep_feature_extraction[:-1]:
            deep = group(deep, workspace)
        deep = spatial(deep, self.deep_feature_extraction[-1])
        deep = deep.add_(feat) if inplace_ok(deep) else deep + feat
        up = spatial(deep, self.upsample[0]).permute(0, 3, 1, 2)              # channels_last NCHW
        out = self.upsample[1](up) + mean
        return out.contiguous()

    def extra_repr(self) -> str:
        return f"preset={self.preset}, config={self.config}"
