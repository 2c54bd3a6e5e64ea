"""DLGSANet: shallow 3x3 embedding, residual groups of (MHDLSA, SparseGSA) blocks, pixel shuffle.

Module and parameter names follow the official implementation ("sparseedge" blocks,
``pixelshuffledirect`` upsampler) so official state dicts load without renaming.

Between the first and the last convolution, feature maps are channels-last ``[B, H, W, C]``
(see ``layers.py`` for why); ``DLGSANet.forward`` takes and returns ordinary NCHW images.
The inner modules (groups, blocks) therefore take channels-last maps.

CPU inference (no autograd) is handed, whole, to the pass that ``dlgsanet.cpu`` registers with
:func:`use_inference_pass`: the same function, band by band of rows with fused kernels.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

from .config import RGB_MEAN, DLGSANetConfig, preset_name
from .layers import inplace_ok, spatial
from .mhdlsa import MHDLSABlock
from .sparse_gsa import SparseGSA, SparseGSABlock

#: ``(model, x) -> output``, or None where it does not apply (see :func:`use_inference_pass`).
InferencePass = Callable[["DLGSANet", torch.Tensor], Optional[torch.Tensor]]
_inference_pass: Optional[InferencePass] = None


def use_inference_pass(run: Optional[InferencePass]) -> None:
    """Hand whole forward passes to ``run`` first (None: none). ``run`` must compute
    ``DLGSANet.forward``'s function; it answers None for the passes it does not take. The model
    never imports its speed paths: ``dlgsanet.cpu`` registers itself here when it is imported."""
    global _inference_pass
    _inference_pass = run


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.body[:-1]:
            y = block(y)
        return self.close(y, x)

    def close(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The group's last conv on the blocks' output ``y``, plus the group's input ``x``."""
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
        if _inference_pass is not None:
            out = _inference_pass(self, x)
            if out is not None:
                return out
        feat = self.embed(x)
        deep = feat
        for group in self.groups():
            deep = group(deep)
        return self.reconstruct(deep, feat)

    def groups(self) -> nn.Sequential:
        """The residual groups of the deep feature extraction (without its last conv)."""
        return self.deep_feature_extraction[:-1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Shallow features: mean shift and the 3x3 embedding, NCHW in, channels-last out."""
        shifted = (x - self.mean.to(dtype=x.dtype)).contiguous(memory_format=torch.channels_last)
        return spatial(shifted.permute(0, 2, 3, 1), self.overlap_embed[0].proj)     # [B, H, W, C]

    def reconstruct(self, deep: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """The body's last conv plus the shallow features ``feat``, then upsampling and the mean
        back: channels-last in, NCHW out."""
        deep = spatial(deep, self.deep_feature_extraction[-1])
        deep = deep.add_(feat) if inplace_ok(deep) else deep + feat
        up = spatial(deep, self.upsample[0]).permute(0, 3, 1, 2)              # channels_last NCHW
        out = self.upsample[1](up) + self.mean.to(dtype=up.dtype)
        return out.contiguous()

    def extra_repr(self) -> str:
        return f"preset={self.preset}, config={self.config}"
