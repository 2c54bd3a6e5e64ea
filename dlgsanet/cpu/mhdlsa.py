"""MHDLSA's local block in CPU inference, band by band of rows.

The per-pixel kernels (K*K*G channels: the largest tensor of the model) never exist for the
whole image. With the fused C++ kernel (:func:`fused.dynamic_conv`) they are made and used a few
pixels of a row at a time, so they never leave L1; without it they exist for one band at a time,
made by one GEMM and consumed by the K*K shifted multiply-adds while still in cache. With the
C++ kernels, the LayerNorm, ``conv0`` and the hyper-network's first 1x1 conv also run as one
pass, and ``conv1`` with the residual as another (:func:`fused.mhdlsa_in`, ``mhdlsa_out``).
The PyTorch ops compute the same sums in the same order per output element as the model's
whole-image path; the C++ kernels agree within float rounding.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from . import fused
from .bands import band_rows, row_bands
from .gdfn import gdfn
from .plan import KernelPlan, layer_norm_params
from .workspace import Workspace, new_output, scratch
from ..model.layers import matrix
from ..model.mhdlsa import MHDLSA, DynamicDWConv, MHDLSABlock
from ..ops.dynamic_dwconv.torch_backend import shift_accumulate_

#: Per-pixel kernel values made at once (floats; 2M = 8 MiB in float32): about 40 rows (Tiny) or
#: 22 rows (Large) at width 128 on one thread; more threads scale it (``bands.thread_band_scale``).
#: Smaller bands lose to per-op overhead, whole images to cache misses (docs/performance.md).
KERNEL_BAND_ELEMENTS = 1 << 21
#: Fewest rows per band: the K // 2 halo rows on each side are recomputed for every band.
MIN_BAND_ROWS = 16


def local_block(block: MHDLSABlock, x: torch.Tensor, workspace: Optional[Workspace] = None,
                kernels: Optional[KernelPlan] = None) -> torch.Tensor:
    """``block(x)``: x + MHDLSA(LN(x)), then x + GDFN(LN(x)), channels-last."""
    kernels = kernels or KernelPlan.choose(x, block)
    x = mhdlsa(block.IDynamicDWConv, block.norm1, x, x, workspace, kernels)
    return gdfn(block.IDynamic_ffn, block.norm2, x, x, workspace, kernels)


def kernel_matrix(dyn: DynamicDWConv) -> torch.Tensor:
    """``conv2`` as a ``[K*K*G, C/4 + 1]`` matrix whose last column is its bias: the bias then
    rides in the GEMM on a channel of ones instead of costing a pass over the kernels."""
    proj = dyn.conv2[0]
    if proj.bias is None:
        return matrix(proj)
    return torch.cat([matrix(proj), proj.bias.view(-1, 1)], dim=1)


def mhdlsa(attn: MHDLSA, norm: nn.Module, x: torch.Tensor, residual: torch.Tensor, workspace: Optional[Workspace],
           kernels: KernelPlan) -> torch.Tensor:
    """``residual + attn(norm(x))``, band by band of rows.

    Output rows ``[r0, r1)`` depend on ``norm(x)`` rows ``[r0 - p, r1 + p)`` (p = K // 2: the
    hyper-network's KxK depth-wise conv, and the dynamic conv itself), so each band computes
    ``conv0`` and the hyper-network's first 1x1 on its rows plus that halo, with the image's
    zero padding where the halo leaves the image.
    """
    b, h, w, c = x.shape
    dyn = attn.conv
    k, g, p = dyn.kernel_size, dyn.groups, dyn.kernel_size // 2
    reduce = dyn.conv1[0]
    w0, w_reduce = matrix(attn.conv0), matrix(reduce)
    back = matrix(attn.conv1).t().expand(b, -1, -1)
    fused_conv = kernels.dynamic_conv
    ends = kernels.mhdlsa_in_out and x.is_contiguous() and residual.is_contiguous()
    params = layer_norm_params(norm) if ends else None
    w_kernels = None if fused_conv else kernel_matrix(dyn).expand(b, -1, -1)  # the C++ kernel takes conv2 as is
    rows = band_rows(w, g * k * k, KERNEL_BAND_ELEMENTS, MIN_BAND_ROWS)
    out = new_output(residual, workspace)
    for r0, r1, a0, a1 in row_bands(h, rows, p):
        n_rows, kept = a1 - a0, r1 - r0
        planes = scratch(workspace, "planes", (b, c, n_rows * w), x)
        hyper = scratch(workspace, "hyper", (b, w_reduce.shape[0], n_rows * w), x)
        if ends:  # C++: LayerNorm, conv0 and the hyper-network's 1x1 in one pass, 64 pixels at a time
            band = x[:, a0:a1] if params else norm(x[:, a0:a1])
            fused.mhdlsa_in(band, attn.conv0.weight, reduce.weight, reduce.bias, planes, hyper, params)
        else:
            # conv0 straight into channel planes: W0 @ y^T, the transpose is free inside the GEMM
            # (image by image with torch.mm: the batched matmul would copy the transposed operand)
            y = norm(x[:, a0:a1]).reshape(b, n_rows * w, c)
            for i in range(b):
                torch.mm(w0, y[i].t(), out=planes[i])
                torch.mm(w_reduce, planes[i], out=hyper[i])
            if reduce.bias is not None:
                hyper += reduce.bias.view(-1, 1)
        hyper = dyn.from_reduced(hyper.view(b, -1, n_rows, w))                       # [b, r, n_rows, w]
        if fused_conv:  # per-pixel kernels made and used inside the C++ kernel, a few pixels at a time
            acc = fused.dynamic_conv(planes.view(b, c, n_rows, w), r0 - a0, hyper.contiguous(), r0 - a0,
                                     matrix(dyn.conv2[0]), dyn.conv2[0].bias, kept, k,
                                     out=scratch(workspace, "dynamic", (b, c, kept, w), planes))
        else:
            acc = _shift_accumulate(dyn, planes, hyper[:, :, r0 - a0:r1 - a0], w_kernels, r0 - a0, n_rows, kept,
                                    workspace)
        dst = out[:, r0:r1]
        if ends:  # C++: conv1 back to channels-last, plus the residual
            fused.mhdlsa_out(acc, attn.conv1.weight, residual[:, r0:r1], dst)
            continue
        res = residual[:, r0:r1].reshape(b, kept * w, c)
        if dst.is_contiguous():  # batch of one: the GEMM writes the output rows directly
            torch.baddbmm(res, acc.view(b, c, kept * w).transpose(1, 2), back, out=dst.view(b, kept * w, c))
        else:
            dst.copy_(torch.baddbmm(res, acc.view(b, c, kept * w).transpose(1, 2), back).view(b, kept, w, c))
    return out


def _shift_accumulate(dyn: DynamicDWConv, planes: torch.Tensor, hyper: torch.Tensor, w_kernels: torch.Tensor,
                      offset: int, n_rows: int, kept: int, workspace: Optional[Workspace]) -> torch.Tensor:
    """The dynamic conv of one band with PyTorch ops: all per-pixel kernels of the band by one
    GEMM, then K*K shifted multiply-adds over the zero-padded planes. ``hyper``: the band's
    kept rows; ``offset``: first kept row in ``planes``. Returns ``[b, c, kept, w]``."""
    b, c = planes.shape[:2]
    w = hyper.shape[-1]
    k, g, p = dyn.kernel_size, dyn.groups, dyn.kernel_size // 2
    if dyn.conv2[0].bias is not None:
        hyper = torch.cat([hyper, hyper.new_ones(b, 1, kept, w)], dim=1)
    hyper = hyper.reshape(b, -1, kept * w)
    shape = (b, w_kernels.shape[1], kept * w)                                      # [b, K*K*G, kept*w]
    kernels = torch.bmm(w_kernels, hyper, out=scratch(workspace, "kernels", shape, hyper))
    padded = planes.new_zeros(b, c, kept + 2 * p, w + 2 * p)
    top = p - offset  # zero rows above the image in the first band
    padded[:, :, top:top + n_rows, p:p + w] = planes.view(b, c, n_rows, w)
    acc = planes.new_empty(b, g, c // g, kept, w)
    shift_accumulate_(acc, padded.view(b, g, c // g, kept + 2 * p, w + 2 * p), kernels.view(b, g, k, k, kept, w))
    return acc.view(b, c, kept, w)
