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
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import (GDFN, ChannelLayerNorm, Workspace, band_rows, conv1x1, cpu_inference, depthwise, inplace_ok,
                     layer_norm_params, matrix, new_output, pointwise, row_bands, scratch, spatial)
from .cpu import fused as cpu_kernels
from .tlc import needs_windows, window_plan, window_rectangles

#: Floats per band of the qkv map (1x1 + 3x3 depth-wise) in CPU inference (512k = 2 MiB).
QKV_BAND_ELEMENTS = 1 << 19
#: Floats of gathered TLC windows processed at once in CPU inference (4M = 16 MiB).
WINDOW_CHUNK_ELEMENTS = 1 << 22


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

    def mixing(self, qk: torch.Tensor, workspace: Optional[Workspace] = None) -> torch.Tensor:
        """``W_out @ blockdiag_h(ReLU(q_h k_h^T / (|q_h| |k_h|^T) * t_h))`` per window.

        qk: ``[n, pixels, >= 2C]`` with q in the first C channels and k in the next C.
        Returns ``[n, C, C]``: output channels x value channels.
        """
        n = qk.shape[0]
        c = self.project_out.in_channels
        heads, d = self.heads, c // self.heads
        q, k = qk[..., :c], qk[..., c:2 * c]
        gram = torch.bmm(q.transpose(1, 2), k)                                     # [n, C, C]
        both = qk[..., :2 * c]
        if inplace_ok(qk):
            squares = torch.mul(both, both, out=scratch(workspace, "squares", both.shape, qk))
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

    def banded(self, x: torch.Tensor, norm: nn.Module, residual: torch.Tensor,
               workspace: Optional[Workspace] = None) -> torch.Tensor:
        """``residual + SparseGSA(norm(x))`` for CPU inference: the qkv map is made in one pass of
        the C++ kernel (:func:`dlgsanet.cpu.fused.conv1x1_dw3x3`), or band by band of rows
        with PyTorch ops (halo 1 row for the 3x3 depth-wise conv); either way the 1x1 output never
        leaves the cache and only one 3*dim-channel map is allocated. The windows are processed
        in chunks."""
        b, h, w, c = x.shape
        dw = self.qkv_dwconv
        qkv = workspace.take("qkv", (b, h, w, 3 * c), x) if workspace is not None else x.new_empty(b, h, w, 3 * c)
        if (cpu_kernels.usable(x, kernel="conv1x1_dw3x3") and dw.kernel_size == (3, 3) and dw.padding == (1, 1)
                and self.qkv.bias is None and x.is_contiguous()):  # the C++ kernel: 1x1 and depth-wise conv in one pass
            params = layer_norm_params(norm)  # the LayerNorm then runs inside the kernel too
            cpu_kernels.conv1x1_dw3x3(x if params else norm(x), self.qkv.weight, dw.weight, dw.bias, qkv, params)
            return self.attend(qkv, residual, workspace)
        for r0, r1, a0, a1 in row_bands(h, band_rows(w, 3 * c, QKV_BAND_ELEMENTS), 1):
            t = conv1x1(norm(x[:, a0:a1]), self.qkv.weight, self.qkv.bias)
            qkv[:, r0:r1] = depthwise(t, dw.weight, dw.bias, dw.padding)[:, r0 - a0:r1 - a0]
        return self.attend(qkv, residual, workspace)

    def attend(self, qkv: torch.Tensor, residual: torch.Tensor, workspace: Optional[Workspace] = None) -> torch.Tensor:
        """``residual + project_out(attention(qkv))`` on TLC windows (eval) or the whole map.

        Without autograd, on the CPU, the fused C++ kernel does it all in one call
        (:func:`dlgsanet.cpu.fused.window_attention`). With PyTorch ops and a ``workspace``
        (CPU inference) the windows go in chunks of whole windows through reused buffers (the
        same arithmetic per window, bounded memory); otherwise all windows of all images in one
        batch."""
        b, h, w, c3 = qkv.shape
        c = c3 // 3
        window = 0 if self.training else int(self.tlc_window or 0)
        if (cpu_kernels.usable(qkv, kernel="window_attention") and self.project_out.bias is None and qkv.is_contiguous()
                and residual.is_contiguous() and inplace_ok(qkv, residual, self.temperature, self.project_out.weight)):
            out = new_output(residual, workspace)  # the C++ kernel: all windows, projection and average
            return cpu_kernels.window_attention(qkv, residual, out, self.temperature, self.project_out.weight,
                                                *window_rectangles(h, w, window, qkv.device))
        if not needs_windows(h, w, window):
            tokens = qkv.view(b, h * w, c3)
            mix = self.mixing(tokens, workspace)
            out = torch.baddbmm(residual.reshape(b, h * w, c), tokens[..., 2 * c:], mix.transpose(1, 2))
            return out.view(b, h, w, c)
        plan = window_plan(h, w, window, qkv.device)
        index = plan.batch_index(b)
        flat = qkv.view(b * h * w, c3)
        total = scratch(workspace, "total", (b * h * w, c), qkv).zero_()
        count = b * plan.count
        step = count if workspace is None else max(1, WINDOW_CHUNK_ELEMENTS // (plan.pixels * c3))
        for k0 in range(0, count, step):
            k1 = min(count, k0 + step)
            idx = index[k0 * plan.pixels:k1 * plan.pixels]
            if inplace_ok(flat):  # into reused buffers (out= cannot record autograd)
                windows = torch.index_select(flat, 0, idx, out=scratch(workspace, "windows", (idx.numel(), c3), flat))
                windows = windows.view(k1 - k0, plan.pixels, c3)                      # gather
                projected = torch.bmm(windows[..., 2 * c:], self.mixing(windows, workspace).transpose(1, 2),
                                      out=scratch(workspace, "projected", (k1 - k0, plan.pixels, c), flat))
            else:
                windows = flat.index_select(0, idx).view(k1 - k0, plan.pixels, c3)    # gather
                projected = torch.bmm(windows[..., 2 * c:], self.mixing(windows).transpose(1, 2))
            total.index_add_(0, idx, projected.view(-1, c))                         # scatter-add
        out = new_output(residual, workspace) if workspace is not None else None
        # coverage counts (1..4) are exact in every dtype; a float32 divisor would promote a 16-bit map
        return torch.addcdiv(residual, total.view(b, h, w, c), plan.coverage.to(residual.dtype), out=out)


class SparseGSABlock(nn.Module):
    """Pre-norm transformer block: x + SparseGSA(LN(x)), then x + GDFN(LN(x)); channels-last."""

    def __init__(self, dim: int, heads: int, ffn_expansion: float, tlc_window: int) -> None:
        super().__init__()
        self.norm3 = ChannelLayerNorm(dim)
        self.restormer_attn = SparseGSA(dim, heads, tlc_window)
        self.norm4 = ChannelLayerNorm(dim)
        self.restormer_ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor, workspace: Optional[Workspace] = None) -> torch.Tensor:
        if cpu_inference(x, self):
            x = self.restormer_attn.banded(x, self.norm3, residual=x, workspace=workspace)
            return self.restormer_ffn.banded(x, self.norm4, residual=x, workspace=workspace)
        x = self.restormer_attn(self.norm3(x), residual=x)
        return self.restormer_ffn(self.norm4(x), residual=x)
