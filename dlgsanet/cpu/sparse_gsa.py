"""SparseGSA's global block in CPU inference: the qkv map in one fused pass or in bands of rows,
the attention in one fused call or over chunks of whole TLC windows through reused buffers."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from . import fused
from .bands import band_rows, row_bands
from .gdfn import gdfn
from .plan import KernelPlan, layer_norm_params
from .workspace import Workspace, new_output, scratch
from ..model.layers import conv1x1, depthwise
from ..model.sparse_gsa import SparseGSA, SparseGSABlock
from ..model.tlc import needs_windows, window_plan

#: Floats per band of the qkv map (1x1 + 3x3 depth-wise) (512k = 2 MiB).
QKV_BAND_ELEMENTS = 1 << 19
#: Floats of gathered TLC windows processed at once (4M = 16 MiB).
WINDOW_CHUNK_ELEMENTS = 1 << 22


def global_block(block: SparseGSABlock, x: torch.Tensor, workspace: Optional[Workspace] = None,
                 kernels: Optional[KernelPlan] = None) -> torch.Tensor:
    """``block(x)``: x + SparseGSA(LN(x)), then x + GDFN(LN(x)), channels-last."""
    kernels = kernels or KernelPlan.choose(x, block)
    gsa = block.restormer_attn
    x = attend(gsa, qkv_map(gsa, block.norm3, x, workspace, kernels), x, workspace, kernels)
    return gdfn(block.restormer_ffn, block.norm4, x, x, workspace, kernels)


def qkv_map(gsa: SparseGSA, norm: nn.Module, x: torch.Tensor, workspace: Optional[Workspace],
            kernels: KernelPlan) -> torch.Tensor:
    """The qkv map of ``norm(x)``: in one pass of the C++ kernel (:func:`fused.conv1x1_dw3x3`), or
    band by band of rows with PyTorch ops (halo 1 row for the 3x3 depth-wise conv); either way the
    1x1 output never leaves the cache and only one 3*dim-channel map is allocated."""
    b, h, w, c = x.shape
    dw = gsa.qkv_dwconv
    qkv = scratch(workspace, "qkv", (b, h, w, 3 * c), x)
    if kernels.conv1x1_dw3x3 and x.is_contiguous():  # the C++ kernel: 1x1 and depth-wise conv in one pass
        params = layer_norm_params(norm)  # the LayerNorm then runs inside the kernel too
        fused.conv1x1_dw3x3(x if params else norm(x), gsa.qkv.weight, dw.weight, dw.bias, qkv, params)
        return qkv
    for r0, r1, a0, a1 in row_bands(h, band_rows(w, 3 * c, QKV_BAND_ELEMENTS), 1):
        t = conv1x1(norm(x[:, a0:a1]), gsa.qkv.weight, gsa.qkv.bias)
        qkv[:, r0:r1] = depthwise(t, dw.weight, dw.bias, dw.padding)[:, r0 - a0:r1 - a0]
    return qkv


def window_rectangles(height: int, width: int, window: int,
                      device: torch.device) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int]]:
    """The TLC windows as row starts, column starts and their (height, width), the form the fused
    CPU kernel takes: one window over the whole map when TLC does not split it."""
    if not needs_windows(height, width, window):
        return (0,), (0,), (height, width)
    plan = window_plan(height, width, window, device)
    return plan.row_starts, plan.col_starts, (plan.window_h, plan.window_w)


def attend(gsa: SparseGSA, qkv: torch.Tensor, residual: torch.Tensor, workspace: Optional[Workspace] = None,
           kernels: Optional[KernelPlan] = None) -> torch.Tensor:
    """``gsa.attend(qkv, residual)`` without autograd: the fused C++ kernel does it all in one call
    (:func:`fused.window_attention`: all windows, projection and average). With PyTorch ops the
    windows go in chunks of whole windows through reused buffers (the same arithmetic per window,
    bounded memory)."""
    kernels = kernels or KernelPlan.choose(qkv, gsa)
    b, h, w, c3 = qkv.shape
    c = c3 // 3
    window = gsa.window
    if kernels.window_attention and qkv.is_contiguous() and residual.is_contiguous():
        out = new_output(residual, workspace)
        return fused.window_attention(qkv, residual, out, gsa.temperature, gsa.project_out.weight,
                                      *window_rectangles(h, w, window, qkv.device))
    if not needs_windows(h, w, window):
        tokens = qkv.view(b, h * w, c3)
        mix = gsa.mixing(tokens, scratch(workspace, "squares", (b, h * w, 2 * c), qkv))
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
        windows = torch.index_select(flat, 0, idx, out=scratch(workspace, "windows", (idx.numel(), c3), flat))
        windows = windows.view(k1 - k0, plan.pixels, c3)                                  # gather
        squares = scratch(workspace, "squares", (k1 - k0, plan.pixels, 2 * c), flat)
        projected = torch.bmm(windows[..., 2 * c:], gsa.mixing(windows, squares).transpose(1, 2),
                              out=scratch(workspace, "projected", (k1 - k0, plan.pixels, c), flat))
        total.index_add_(0, idx, projected.view(-1, c))                                   # scatter-add
    out = new_output(residual, workspace) if workspace is not None else None
    # coverage counts (1..4) are exact in every dtype; a float32 divisor would promote a 16-bit map
    return torch.addcdiv(residual, total.view(b, h, w, c), plan.coverage.to(residual.dtype), out=out)
