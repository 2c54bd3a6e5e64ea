"""A naive DLGSANet that follows the official arithmetic step by step (the yardstick for speed).

Why it exists: the official code (github.com/NeonLeexiang/DLGSANet, ``basicsr/archs/dlgsanet_arch.py``
at commit 0974b9a) only runs on CUDA through cupy. This file re-states, from that description,
what it computes, in the same order and with the same intermediate tensors, on any device:

- LayerNorm goes through the reshapes ``b c h w -> b (h w) c`` and back, with a hand-written
  mean and biased variance, ``(x - mu) / sqrt(var + 1e-5) * weight + bias``;
- the dynamic depth-wise convolution is the unfold-based equivalent of the cupy kernel (the same
  replacement that produced ``fixtures/official``): every K x K patch is materialised;
- the attention rearranges q, k, v into ``b head c (h w)``, L2-normalises q and k, multiplies,
  scales by the temperature, applies ReLU, multiplies by v and rearranges back;
- in eval mode the TLC windows are cut one by one in a Python loop (``grids``) and pasted back one
  by one with a count map (``grids_inverse``). The official code asserts batch 1 there; this one
  runs that loop once per image of a batch, which is what the official code gives image by image.

Module and parameter names are the official ones, so official state dicts (and ours) load into it
unchanged. It is deliberately slow and memory-hungry; it is not part of the package.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

RGB_MEAN = (0.4488, 0.4371, 0.4040)
#: Official TLC window per scale ([x2, x3, x4] -> [96, 72, 48]).
TLC_BY_SCALE = {2: 96, 3: 72, 4: 48}
PRESETS = {
    "tiny": dict(dim=48, groups=3, blocks=3, local_heads=6, global_heads=6, window=7),
    "light": dict(dim=48, groups=4, blocks=3, local_heads=6, global_heads=6, window=7),
    "large": dict(dim=90, groups=6, blocks=4, local_heads=6, global_heads=6, window=7),
}


# --- rearranges, written out as the permute + reshape copies that einops performs -------------
def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """'b c h w -> b (h w) c'."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """'b (h w) c -> b c h w'."""
    b, _, c = x.shape
    return x.reshape(b, h, w, c).permute(0, 3, 1, 2)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """'b (head c) h w -> b head c (h w)'."""
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w)


def merge_heads(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """'b head c (h w) -> b (head c) h w'."""
    b, heads, c, _ = x.shape
    return x.reshape(b, heads * c, h, w)


class WithBiasLayerNorm(nn.Module):
    """Hand-written LayerNorm over the last dimension (mean, biased variance, eps 1e-5)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(sigma + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
    """Channel LayerNorm of a [B,C,H,W] map through the token reshapes (parameters in ``body``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = WithBiasLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return to_map(self.body(to_tokens(x)), h, w)


class FeedForward(nn.Module):
    """GDFN: 1x1 to 2*hidden, 3x3 depth-wise, gelu(first half) * second half, 1x1 back."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x)
        x1, x2 = self.dwconv(x).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


def unfold_dynamic_dwconv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The cupy ``idynamic`` forward as unfold + multiply + sum (stride 1, dilation 1, zero pad K//2).

    x [B,C,H,W]; weight [B,G,K,K,H,W]; channel c uses kernel group c // (C / G).
    """
    b, c, h, w = x.shape
    groups, k = weight.shape[1], weight.shape[2]
    patches = F.unfold(x, k, padding=(k - 1) // 2)                  # [B, C*K*K, H*W]
    patches = patches.view(b, groups, c // groups, k * k, h * w)
    out = (patches * weight.reshape(b, groups, 1, k * k, h * w)).sum(dim=3)
    return out.view(b, c, h, w)


class IDynamicDWConv(nn.Module):
    """Hyper-network (1x1 reduce, KxK depth-wise, 1x1 to K*K*G) and the unfold dynamic conv."""

    def __init__(self, channels: int, kernel_size: int, group_channels: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = channels // group_channels
        reduced = channels // 4
        self.conv1 = nn.Sequential(
            nn.Conv2d(channels, reduced, 1),
            nn.Conv2d(reduced, reduced, kernel_size, padding=kernel_size // 2, groups=reduced),
        )
        self.conv2 = nn.Sequential(nn.Conv2d(reduced, kernel_size ** 2 * self.groups, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.conv2(self.conv1(x))
        b, _, h, w = weight.shape
        weight = weight.view(b, self.groups, self.kernel_size, self.kernel_size, h, w)
        return unfold_dynamic_dwconv(x, weight)


class IDynamicDWConvBlock(nn.Module):
    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 1, bias=False)
        self.conv = IDynamicDWConv(dim, window, heads)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv(self.conv0(x)))


class SparseAttention(nn.Module):
    """SparseGSA with TLC in eval mode: windows cut and pasted in Python loops."""

    def __init__(self, dim: int, heads: int, tlc_kernel: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.tlc_kernel = tlc_kernel
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = qkv.chunk(3, dim=1)
        q = split_heads(q, self.num_heads)
        k = split_heads(k, self.num_heads)
        v = split_heads(v, self.num_heads)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = torch.relu((q @ k.transpose(-2, -1)) * self.temperature)
        return attn @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        qkv = self.qkv_dwconv(self.qkv(x))
        if self.training or not self.tlc_kernel:
            return self.project_out(merge_heads(self._attend(qkv), h, w))
        outs = []
        for image in qkv.split(1, dim=0):           # the official loop asserts batch 1
            parts, idxes = self._grids(image)
            out = merge_heads(self._attend(parts), parts.shape[-2], parts.shape[-1])
            outs.append(self._grids_inverse(out, idxes, image.shape))
        return self.project_out(torch.cat(outs, dim=0))

    def _grids(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Cut overlapping windows: constant step, last row/column snapped to the border."""
        _, _, h, w = x.shape
        k1, k2 = min(h, self.tlc_kernel), min(w, self.tlc_kernel)
        num_row, num_col = (h - 1) // k1 + 1, (w - 1) // k2 + 1
        step_i = k1 if num_row == 1 else math.ceil((h - k1) / (num_row - 1) - 1e-8)
        step_j = k2 if num_col == 1 else math.ceil((w - k2) / (num_col - 1) - 1e-8)
        parts, idxes = [], []
        i, last_i = 0, False
        while i < h and not last_i:
            if i + k1 >= h:
                i, last_i = h - k1, True
            j, last_j = 0, False
            while j < w and not last_j:
                if j + k2 >= w:
                    j, last_j = w - k2, True
                parts.append(x[:, :, i:i + k1, j:j + k2])
                idxes.append((i, j))
                j += step_j
            i += step_i
        return torch.cat(parts, dim=0), idxes

    def _grids_inverse(self, outs: torch.Tensor, idxes: list[tuple[int, int]],
                       qkv_shape: torch.Size) -> torch.Tensor:
        """Paste the windows back one by one and divide by how many covered each pixel."""
        _, c3, h, w = qkv_shape
        k1, k2 = min(h, self.tlc_kernel), min(w, self.tlc_kernel)
        preds = torch.zeros(1, c3 // 3, h, w, dtype=outs.dtype, device=outs.device)
        count = torch.zeros(1, 1, h, w, dtype=outs.dtype, device=outs.device)
        for cnt, (i, j) in enumerate(idxes):
            preds[0, :, i:i + k1, j:j + k2] += outs[cnt]
            count[0, 0, i:i + k1, j:j + k2] += 1.0
        return preds / count


class IDynamicLayerBlock(nn.Module):
    def __init__(self, dim: int, window: int, heads: int, expansion: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.IDynamicDWConv = IDynamicDWConvBlock(dim, window, heads)
        self.norm2 = LayerNorm(dim)
        self.IDynamic_ffn = FeedForward(dim, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.IDynamicDWConv(self.norm1(x)) + x
        return self.IDynamic_ffn(self.norm2(x)) + x


class SparseAttentionLayerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion: float, tlc_kernel: int) -> None:
        super().__init__()
        self.norm3 = LayerNorm(dim)
        self.restormer_attn = SparseAttention(dim, heads, tlc_kernel)
        self.norm4 = LayerNorm(dim)
        self.restormer_ffn = FeedForward(dim, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.restormer_attn(self.norm3(x)) + x
        return self.restormer_ffn(self.norm4(x)) + x


class BuildBlock(nn.Module):
    def __init__(self, dim: int, blocks: int, window: int, local_heads: int, global_heads: int,
                 expansion: float, tlc_kernel: int) -> None:
        super().__init__()
        body: list[nn.Module] = []
        for _ in range(blocks):
            body.append(IDynamicLayerBlock(dim, window, local_heads, expansion))
            body.append(SparseAttentionLayerBlock(dim, global_heads, expansion, tlc_kernel))
        body.append(nn.Conv2d(dim, dim, 3, 1, 1))
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ReferenceDLGSANet(nn.Module):
    """The official "sparseedge" / "pixelshuffledirect" DLGSANet, computed naively."""

    def __init__(self, dim: int = 48, groups: int = 3, blocks: int = 3, local_heads: int = 6,
                 global_heads: int = 6, window: int = 7, scale: int = 4, tlc_window: Optional[int] = None,
                 ffn_expansion: float = 2.0, in_chans: int = 3) -> None:
        super().__init__()
        if tlc_window is None:
            tlc_window = TLC_BY_SCALE.get(scale, max(8, round(48 * 4 / max(scale, 1))))
        self.scale = scale
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.overlap_embed = nn.Sequential(OverlapPatchEmbed(in_chans, dim))
        self.deep_feature_extraction = nn.Sequential(
            *[BuildBlock(dim, blocks, window, local_heads, global_heads, ffn_expansion, tlc_window)
              for _ in range(groups)],
            nn.Conv2d(dim, dim, 3, padding=1),
        )
        self.upsample = nn.Sequential(nn.Conv2d(dim, scale ** 2 * in_chans, 3, 1, 1), nn.PixelShuffle(scale))

    @classmethod
    def from_config(cls, config: Any) -> "ReferenceDLGSANet":
        """Build from a ``dlgsanet.DLGSANetConfig`` (or anything with the same attributes)."""
        names = ("dim", "groups", "blocks", "local_heads", "global_heads", "window", "scale",
                 "tlc_window", "ffn_expansion", "in_chans")
        return cls(**{n: getattr(config, n) for n in names})

    def set_tlc_window(self, tlc_window: Optional[int]) -> None:
        for m in self.modules():
            if isinstance(m, SparseAttention):
                m.tlc_kernel = tlc_window or 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.type_as(x)
        x = x - mean
        x = self.overlap_embed(x)
        x = self.deep_feature_extraction(x) + x
        x = self.upsample(x)
        return x + mean


def reference_preset(preset: str, scale: int = 4, tlc_window: Optional[int] = None) -> ReferenceDLGSANet:
    """The naive model of an official preset ("tiny", "light", "large")."""
    return ReferenceDLGSANet(scale=scale, tlc_window=tlc_window, **PRESETS[preset.lower()])
