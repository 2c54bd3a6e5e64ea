"""SparseGSA: sparse global self-attention (the global block of DLGSANet).

Restormer-style "transposed" attention: per head, a channels x channels map from
L2-normalised queries and keys (over pixels), made sparse with ReLU instead of softmax.
In eval mode it runs on TLC windows (see ``tlc.py``); in train mode on the whole patch.

How it is evaluated (same function, fewer passes over memory):

- the Gram matrix ``q k^T`` is taken BEFORE normalising, and divided by the two norms
  afterwards, ``(q/|q|)(k/|k|)^T = (q k^T) / (|q| |k|^T)``, so q and k are never rewritten;
- all heads share one GEMM per window: the full ``C x C`` product of the channels-last window
  with itself (no per-head copies), of which the diagonal head blocks are kept;
- ``project_out`` is folded into the attention: ``W_out (A v) = (W_out A) v``, with A the
  block-diagonal map of all heads, so each window costs one ``[pixels, C] x [C, C]`` GEMM and the
  attention output is never materialised before projection. Averaging over overlapping TLC
  windows commutes with the (linear) projection, so windows are projected, then averaged.

CPU inference computes the same block band by band of rows, windows in chunks
(``dlgsanet.cpu.sparse_gsa``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import GDFN, ChannelLayerNorm, inplace_ok, matrix, pointwise, spatial
from .tlc import needs_windows, window_plan


class SparseGSA(nn.Module):
    """qkv 1x1 + 3x3 depth-wise, ReLU(q k^T * temperature) v per head, 1x1 output projection.

    Channels-last in and out; ``forward(x, residual)`` returns ``residual + SparseGSA(x)``.
    """

    def __init__(self, dim: int, heads: int, tlc_window: int) -> None:
        super().__init__()
        self.heads = heads
        self.tlc_window = tlc_window
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    @property
    def window(self) -> int:
        """The TLC window in effect: 0 (whole map) in train mode or with TLC off."""
        return 0 if self.training else int(self.tlc_window or 0)

    def mixing(self, qk: torch.Tensor, squares: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``W_out @ blockdiag_h(ReLU(q_h k_h^T / (|q_h| |k_h|^T) * t_h))`` per window.

        qk: ``[n, pixels, >= 2C]`` with q in the first C channels and k in the next C; ``squares``:
        a buffer for ``[n, pixels, 2C]`` squares that the caller reuses (CPU inference).
        Returns ``[n, C, C]``: output channels x value channels.
        """
        n = qk.shape[0]
        c = self.project_out.in_channels
        heads, d = self.heads, c // self.heads
        q, k = qk[..., :c], qk[..., c:2 * c]
        gram = torch.bmm(q.transpose(1, 2), k)                                     # [n, C, C]
        both = qk[..., :2 * c]
        if inplace_ok(qk):
            squares = torch.mul(both, both, out=squares)
            norms = squares.sum(dim=1).sqrt_()                                     # [n, 2C]
        else:  # vector_norm has a safe gradient at 0
            norms = torch.linalg.vector_norm(both, dim=1)
        inv = norms.clamp_min(1e-12).reciprocal()
        blocks = gram.view(n, heads, d, heads, d).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)
        attn = blocks * inv[:, :c].reshape(n, heads, d, 1) * inv[:, c:].reshape(n, heads, 1, d)
        attn = F.relu(attn * self.temperature)                                     # [n, h, d, d]
        eye = torch.eye(heads, dtype=attn.dtype, device=attn.device).view(1, heads, 1, heads, 1)
        block_diag = (attn.unsqueeze(3) * eye).reshape(n, c, c)
        return torch.matmul(matrix(self.project_out), block_diag)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + SparseGSA(x)`` (x already normalised)."""
        return self.attend(spatial(pointwise(x, self.qkv), self.qkv_dwconv), residual)

    def attend(self, qkv: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + project_out(attention(qkv))`` on TLC windows (eval) or the whole map: all
        windows of all images gathered at once, projected, summed back and averaged."""
        b, h, w, c3 = qkv.shape
        c = c3 // 3
        window = self.window
        if not needs_windows(h, w, window):
            tokens = qkv.view(b, h * w, c3)
            mix = self.mixing(tokens)
            out = torch.baddbmm(residual.reshape(b, h * w, c), tokens[..., 2 * c:], mix.transpose(1, 2))
            return out.view(b, h, w, c)
        plan = window_plan(h, w, window, qkv.device)
        index = plan.batch_index(b)
        windows = qkv.view(b * h * w, c3).index_select(0, index).view(b * plan.count, plan.pixels, c3)  # gather
        projected = torch.bmm(windows[..., 2 * c:], self.mixing(windows).transpose(1, 2))
        total = qkv.new_zeros(b * h * w, c).index_add_(0, index, projected.view(-1, c))           # scatter-add
        # coverage counts (1..4) are exact in every dtype; a float32 divisor would promote a 16-bit map
        return torch.addcdiv(residual, total.view(b, h, w, c), plan.coverage.to(residual.dtype))


class SparseGSABlock(nn.Module):
    """Pre-norm transformer block: x + SparseGSA(LN(x)), then x + GDFN(LN(x)); channels-last."""

    def __init__(self, dim: int, heads: int, ffn_expansion: float, tlc_window: int) -> None:
        super().__init__()
        self.norm3 = ChannelLayerNorm(dim)
        self.restormer_attn = SparseGSA(dim, heads, tlc_window)
        self.norm4 = ChannelLayerNorm(dim)
        self.restormer_ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.restormer_attn(self.norm3(x), residual=x)
        return self.restormer_ffn(self.norm4(x), residual=x)
