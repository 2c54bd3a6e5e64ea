"""MHDLSA: multi-head dynamic local self-attention (the local block of DLGSANet).

A hyper-network predicts a K x K depth-wise kernel for every pixel and every head-group of
channels; the feature map is then filtered with those per-pixel kernels. This "dynamic
depth-wise convolution" is the only part of the model that is not a GEMM or a stock convolution,
and on a CPU it is memory-bound, so its layout decides the speed:

- the block works channels-last, but the dynamic conv wants channel planes (NCHW), where each
  shifted view is a plain strided slice; the two 1x1 convolutions around it (``conv0``,
  ``conv1``) do the transposition for free by multiplying with transposed operands;
- in CPU inference (:meth:`MHDLSA.banded`) the whole block runs band by band of rows with a
  halo of K // 2 rows. The per-pixel kernels (K*K*G channels: 392 for Tiny, 735 for Large, the
  largest tensor of the model) are made and used inside the fused C++ kernel
  (:func:`dlgsanet.cpu.fused.dynamic_conv`), 64 pixels of a row at a time, so they never
  leave L1; without it they exist for one band at a time, made by one GEMM and consumed by the
  K*K shifted multiply-adds while still in cache. With the C++ kernels, the LayerNorm, ``conv0``
  and the hyper-network's first 1x1 conv also run as one pass, and ``conv1`` with the residual
  as another (:func:`dlgsanet.cpu.fused.mhdlsa_in`, ``mhdlsa_out``);
- on CUDA, or when gradients are needed, the kernels are made for the whole image and the conv
  goes through :func:`dlgsanet.ops.dynamic_dwconv` (the cupy kernels, or the PyTorch autograd
  Function).

All paths compute the same function; the PyTorch paths the same sums in the same order per
output element, the C++ kernels within float rounding of them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .layers import (GDFN, ChannelLayerNorm, Workspace, band_rows, cpu_inference, layer_norm_params, matrix,
                     new_output, row_bands, scratch)
from .cpu import fused as cpu_kernels
from .ops import dynamic_dwconv
from .ops.dynamic_dwconv_torch import shift_accumulate_

#: Per-pixel kernel values made at once in CPU inference (floats; 2M = 8 MiB in float32).
#: Measured on a 2-core EPYC (docs/performance.md): bands of 2-8 rows lose to per-op overhead,
#: whole images lose to cache misses (Large at 128x128: 93 ms whole vs 53 ms in 32-row bands
#: per dynamic conv); this gives ~40 rows (Tiny) / ~22 rows (Large) at width 128 on one thread
#: (more threads scale it: ``layers.thread_band_scale``).
KERNEL_BAND_ELEMENTS = 1 << 21
#: Fewest rows per band: the K // 2 halo rows on each side are recomputed for every band.
MIN_BAND_ROWS = 16


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
        reduce, spread = self.conv1[0], self.conv1[1]
        t = torch.matmul(matrix(reduce), x.reshape(n, c, h * w))
        if reduce.bias is not None:
            t = t + reduce.bias.view(-1, 1)
        return spread(t.view(n, -1, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        k = self.kernel_size
        kernels = self.conv2(self.hidden(x)).view(n, self.groups, k, k, h, w)
        return dynamic_dwconv(x, kernels)

    def kernel_matrix(self) -> torch.Tensor:
        """``conv2`` as a ``[K*K*G, C/4 + 1]`` matrix whose last column is its bias: the bias then
        rides in the GEMM on a channel of ones instead of costing a pass over the kernels."""
        proj = self.conv2[0]
        if proj.bias is None:
            return matrix(proj)
        return torch.cat([matrix(proj), proj.bias.view(-1, 1)], dim=1)


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

    def banded(self, x: torch.Tensor, norm: nn.Module, residual: torch.Tensor,
               workspace: Optional[Workspace] = None) -> torch.Tensor:
        """``residual + MHDLSA(norm(x))`` for CPU inference, band by band of rows.

        Output rows ``[r0, r1)`` depend on ``norm(x)`` rows ``[r0 - p, r1 + p)`` (p = K // 2: the
        hyper-network's KxK depth-wise conv, and the dynamic conv itself), so each band computes
        ``conv0`` and the hyper-network's first 1x1 on its rows plus that halo, with the image's
        zero padding where the halo leaves the image.
        """
        b, h, w, c = x.shape
        dyn = self.conv
        k, g, p = dyn.kernel_size, dyn.groups, dyn.kernel_size // 2
        reduce, spread = dyn.conv1[0], dyn.conv1[1]
        w0, w_reduce = matrix(self.conv0), matrix(reduce)
        back = matrix(self.conv1).t().expand(b, -1, -1)
        fused = cpu_kernels.usable(x, kernel="dynamic_conv")
        ends = (fused and cpu_kernels.usable(x, kernel="mhdlsa_in_out") and x.is_contiguous()
                and residual.is_contiguous())
        params = layer_norm_params(norm) if ends else None
        w_kernels = None if fused else dyn.kernel_matrix().expand(b, -1, -1)  # the C++ kernel takes conv2 as is
        rows = band_rows(w, g * k * k, KERNEL_BAND_ELEMENTS, MIN_BAND_ROWS)
        out = new_output(residual, workspace)
        for r0, r1, a0, a1 in row_bands(h, rows, p):
            n_rows, kept = a1 - a0, r1 - r0
            planes = scratch(workspace, "planes", (b, c, n_rows * w), x)
            hyper = scratch(workspace, "hyper", (b, w_reduce.shape[0], n_rows * w), x)
            if ends:  # C++: LayerNorm, conv0 and the hyper-network's 1x1 in one pass, 64 pixels at a time
                band = x[:, a0:a1] if params else norm(x[:, a0:a1])
                cpu_kernels.mhdlsa_in(band, self.conv0.weight, reduce.weight, reduce.bias, planes, hyper, params)
            else:
                # conv0 straight into channel planes: W0 @ y^T, the transpose is free inside the GEMM
                # (image by image with torch.mm: the batched matmul would copy the transposed operand)
                y = norm(x[:, a0:a1]).reshape(b, n_rows * w, c)
                for i in range(b):
                    torch.mm(w0, y[i].t(), out=planes[i])
                    torch.mm(w_reduce, planes[i], out=hyper[i])
                if reduce.bias is not None:
                    hyper += reduce.bias.view(-1, 1)
            hyper = spread(hyper.view(b, -1, n_rows, w))                               # [b, r, n_rows, w]
            if fused:  # per-pixel kernels made and used inside the C++ kernel, a few pixels at a time
                acc = cpu_kernels.dynamic_conv(planes.view(b, c, n_rows, w), r0 - a0, hyper.contiguous(), r0 - a0,
                                               matrix(dyn.conv2[0]), dyn.conv2[0].bias, kept, k,
                                               out=scratch(workspace, "dynamic", (b, c, kept, w), planes))
            else:
                acc = self._shift_accumulate(planes, hyper[:, :, r0 - a0:r1 - a0], w_kernels, r0 - a0, n_rows,
                                             kept, workspace)
            dst = out[:, r0:r1]
            if ends:  # C++: conv1 back to channels-last, plus the residual
                cpu_kernels.mhdlsa_out(acc, self.conv1.weight, residual[:, r0:r1], dst)
                continue
            res = residual[:, r0:r1].reshape(b, kept * w, c)
            if dst.is_contiguous():  # batch of one: the GEMM writes the output rows directly
                torch.baddbmm(res, acc.view(b, c, kept * w).transpose(1, 2), back, out=dst.view(b, kept * w, c))
            else:
                dst.copy_(torch.baddbmm(res, acc.view(b, c, kept * w).transpose(1, 2), back).view(b, kept, w, c))
        return out

    def _shift_accumulate(self, planes: torch.Tensor, hyper: torch.Tensor, w_kernels: torch.Tensor, offset: int,
                          n_rows: int, kept: int, workspace: Optional[Workspace]) -> torch.Tensor:
        """The dynamic conv of one band with PyTorch ops: all per-pixel kernels of the band by one
        GEMM, then K*K shifted multiply-adds over the zero-padded planes. ``hyper``: the band's
        kept rows; ``offset``: first kept row in ``planes``. Returns ``[b, c, kept, w]``."""
        b, c = planes.shape[:2]
        w = hyper.shape[-1]
        dyn = self.conv
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


class MHDLSABlock(nn.Module):
    """Pre-norm transformer block: x + MHDLSA(LN(x)), then x + GDFN(LN(x)); channels-last."""

    def __init__(self, dim: int, window: int, heads: int, ffn_expansion: float) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.IDynamicDWConv = MHDLSA(dim, window, heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.IDynamic_ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor, workspace: Optional[Workspace] = None) -> torch.Tensor:
        if cpu_inference(x, self):
            x = self.IDynamicDWConv.banded(x, self.norm1, residual=x, workspace=workspace)
            return self.IDynamic_ffn.banded(x, self.norm2, residual=x, workspace=workspace)
        x = self.IDynamicDWConv(self.norm1(x), residual=x)
        return self.IDynamic_ffn(self.norm2(x), residual=x)
