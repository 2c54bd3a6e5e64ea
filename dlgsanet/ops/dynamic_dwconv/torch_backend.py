"""Pure-PyTorch dynamic depth-wise convolution (any device, differentiable).

Shift-and-accumulate: one fused multiply-add over the whole feature map per kernel offset
(K*K of them), reading shifted views of the zero-padded input and accumulating in place into
one output buffer. Unlike an ``unfold``-based version it never materialises the K*K-times larger
patch tensor, and it adds the offsets in the same order as the official CUDA kernel (row by
row, ``value += w * x``).

Why in place and why a custom autograd Function: the op is memory-bound (one multiply-add per
element read), so the only thing that matters is how many bytes cross the memory bus. Writing
each product to a fresh tensor and adding it afterwards triples the traffic; ``addcmul_`` into
one accumulator does not. Under autograd, in-place slices would make the backward allocate a
full-size zero tensor per offset (``slice_backward``), so training goes through
:class:`DynamicDWConvFunction`, whose backward is the same shift-and-accumulate run the other way
(K*K ``addcmul_`` into one padded gradient buffer, and one multiply + channel sum per offset for
the kernel gradient), with a handful of feature-map-sized buffers in total.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def shift_accumulate_(out: torch.Tensor, xp: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Write ``sum_{i,j} kernels[:, :, i, j] * xp[..., i:i+h, j:j+w]`` into ``out`` (no autograd).

    out: ``[N, G, Cg, h, w]`` (any strides, overwritten); xp: ``[N, G, Cg, h+K-1, w+K-1]``, the
    zero-padded input; kernels: ``[N, G, K, K, h, w]``, broadcast over the Cg channels of a group.
    Callers may pass row bands of larger maps (views) to bound the working set.
    """
    h, w = out.shape[-2:]
    k = kernels.shape[2]
    kern = kernels.unsqueeze(2)  # [N, G, 1, K, K, h, w]
    torch.mul(kern[:, :, :, 0, 0], xp[..., 0:h, 0:w], out=out)
    for i in range(k):
        for j in range(k):
            if i or j:
                out.addcmul_(kern[:, :, :, i, j], xp[..., i:i + h, j:j + w])
    return out


def _pad_grouped(x: torch.Tensor, groups: int, pad: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return F.pad(x, (pad, pad, pad, pad)).view(n, groups, c // groups, h + 2 * pad, w + 2 * pad)


def _forward(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    groups, k = kernels.shape[1], kernels.shape[2]
    out = x.new_empty(n, groups, c // groups, h, w)
    shift_accumulate_(out, _pad_grouped(x, groups, k // 2), kernels)
    return out.view(n, c, h, w)


class DynamicDWConvFunction(torch.autograd.Function):
    """Autograd for the dynamic depth-wise conv with a shift-and-accumulate backward.

    grad_x[c, q + o] += K[g(c), o, q] * grad_out[c, q]   (the forward run in reverse)
    grad_K[g, o, q]   = sum_{c in g} grad_out[c, q] * x[c, q + o]
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, kernels)
        return _forward(x, kernels)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, kernels = ctx.saved_tensors
        n, c, h, w = x.shape
        groups, k = kernels.shape[1], kernels.shape[2]
        pad = k // 2
        go = grad_out.contiguous().view(n, groups, c // groups, h, w)
        kern = kernels.unsqueeze(2)
        grad_x: Optional[torch.Tensor] = None
        grad_k: Optional[torch.Tensor] = None
        if ctx.needs_input_grad[0]:
            gxp = x.new_zeros(n, groups, c // groups, h + 2 * pad, w + 2 * pad)
            for i in range(k):
                for j in range(k):
                    gxp[..., i:i + h, j:j + w].addcmul_(kern[:, :, :, i, j], go)
            grad_x = gxp[..., pad:pad + h, pad:pad + w].reshape(n, c, h, w)
        if ctx.needs_input_grad[1]:
            xp = _pad_grouped(x, groups, pad)
            grad_k = kernels.new_empty(kernels.shape)
            prod = go.new_empty(go.shape)
            for i in range(k):
                for j in range(k):
                    torch.mul(go, xp[..., i:i + h, j:j + w], out=prod)
                    torch.sum(prod, dim=2, out=grad_k[:, :, i, j])
        return grad_x, grad_k


def dynamic_dwconv_torch(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """out[n,c,h,w] = sum_{i,j} kernels[n, c // (C/G), i, j, h, w] * x[n, c, h+i-p, w+j-p].

    x: ``[N, C, H, W]``; kernels: ``[N, G, K, K, H, W]`` with C divisible by G, K odd, p = K // 2.
    Differentiable in both arguments; without autograd it runs the in-place path directly.
    """
    if torch.is_grad_enabled() and (x.requires_grad or kernels.requires_grad):
        return DynamicDWConvFunction.apply(x, kernels)
    return _forward(x, kernels)
