"""C++ dynamic depth-wise conv for CPU training: forward and backward of ``kernels/cpu_train.cpp``.

Why: the PyTorch autograd Function (``torch_backend``) makes each of its K*K taps, forward and
backward, a pass over whole feature maps, plus a zero-filled reduction per tap for the kernel
gradient; in a CPU training step those passes cost more than the convolution's arithmetic. The
C++ kernels work on one kernel group of one image at a time, its zero-padded planes built once
in cache. Same function, within float rounding (taps summed in the same row-major order).

Used for float32 and float64 CPU tensors under autograd when ``$DLGSANET_TRAIN_KERNELS`` is not
``off`` (see :mod:`dlgsanet.ops.cpu_training`) and the library (:mod:`dlgsanet.ops.train_kernels`)
builds, loads and passes its self-check; otherwise the dispatcher takes the PyTorch backend and
says why once.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torch.profiler import record_function

from ..train_kernels import call, ptr, unavailable_reason as kernels_unavailable
from .torch_backend import dynamic_dwconv_torch


def unavailable_reason(x: torch.Tensor, kernels: torch.Tensor):
    """Why the C++ kernels cannot run on these tensors (None: they can)."""
    return kernels_unavailable(x, kernels)


def _shape(x: torch.Tensor, kernels: torch.Tensor) -> list:
    n, c, h, w = x.shape
    return [n, c, kernels.shape[1], kernels.shape[2], h, w]


class DynamicDWConvCpuFunction(torch.autograd.Function):
    """The dynamic depth-wise conv with C++ forward and backward (formulas in the C++ source)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, kernels = x.contiguous(), kernels.contiguous()
        ctx.save_for_backward(x, kernels)
        out = torch.empty_like(x)
        with record_function("dlgsanet::ddw_forward"):
            call("ddw_forward", x.dtype, ptr(x), ptr(kernels), ptr(out), *_shape(x, kernels))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, kernels = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_k = torch.empty_like(kernels) if ctx.needs_input_grad[1] else None
        if grad_x is not None or grad_k is not None:
            with record_function("dlgsanet::ddw_backward"):
                call("ddw_backward", x.dtype, ptr(grad_out), ptr(x), ptr(kernels), ptr(grad_x), ptr(grad_k),
                     *_shape(x, kernels))
        return grad_x, grad_k


def dynamic_dwconv_cpu(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``dynamic_dwconv_torch(x, kernels)`` through the C++ kernels (CPU, float32/float64)."""
    return DynamicDWConvCpuFunction.apply(x, kernels)


def self_check() -> Iterator[Tuple[str, float]]:
    """(what, largest difference) of the output and both gradients against the PyTorch backend on
    a small random case."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 9, generator=gen, requires_grad=True)
    k = torch.randn(2, 2, 3, 3, 5, 9, generator=gen, requires_grad=True)
    gy = torch.randn(2, 6, 5, 9, generator=gen)
    with torch.enable_grad():
        ours = dynamic_dwconv_cpu(x, k)
        mine = torch.autograd.grad(ours, (x, k), gy)
        expect = dynamic_dwconv_torch(x, k)
        theirs = torch.autograd.grad(expect, (x, k), gy)
    for name, a, b in (("dynamic conv", ours, expect), ("its grad_x", mine[0], theirs[0]),
                       ("its grad_K", mine[1], theirs[1])):
        yield name, (a - b).abs().max().item()
