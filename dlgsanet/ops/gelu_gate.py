"""The feed-forward's gate, ``gelu(gate) * value``, with one C++ pass each way in CPU training.

Why: under autograd PyTorch runs it as GELU, a multiply, and in the backward two multiplies and
GELU's backward: five passes over maps of 2*dim channels, the widest of the network, on a
memory-bound machine. The C++ kernels (``kernels/cpu_train.cpp``, loaded by
:mod:`dlgsanet.ops.train_kernels`) read the inputs once and write the output (or both input
gradients) once. GELU is the exact (erf) form, with erf from Abramowitz & Stegun 7.1.26 in
float32 (as PyTorch's own vectorised CPU GELU) and the C library's erf in float64.

Only CPU training takes it (see :mod:`dlgsanet.ops.cpu_training`); inference and every other
device keep ``F.gelu(gate) * value``. Where the kernels cannot run, PyTorch's ops are used and
the reason is logged once.
"""
from __future__ import annotations

import logging
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from .cpu_training import applies
from .optional import OnceLog
from .train_kernels import call, ptr, unavailable_reason

logger = logging.getLogger(__name__)
_log_once = OnceLog(logger)


class GeluGateCpuFunction(torch.autograd.Function):
    """``gelu(gate) * value`` with C++ forward and backward (CPU, float32/float64, same shapes)."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        gate, value = gate.contiguous(), value.contiguous()
        ctx.save_for_backward(gate, value)
        out = torch.empty_like(gate)
        with record_function("dlgsanet::gelu_gate_forward"):
            call("gate_forward", gate.dtype, ptr(gate), ptr(value), ptr(out), gate.numel())
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        gate, value = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_gate, grad_value = torch.empty_like(gate), torch.empty_like(value)
        with record_function("dlgsanet::gelu_gate_backward"):
            call("gate_backward", gate.dtype, ptr(grad_out), ptr(gate), ptr(value), ptr(grad_gate), ptr(grad_value),
                 gate.numel())
        return grad_gate, grad_value


def gelu_gate(gate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``F.gelu(gate) * value``: the C++ Function in CPU training where it can run, else PyTorch's ops."""
    if gate.shape == value.shape and applies(gate, value):
        reason = unavailable_reason(gate, value)
        if reason is None:
            return GeluGateCpuFunction.apply(gate, value)
        _log_once(f"DLGSANet: GELU gate uses PyTorch ops in CPU training: {reason}")
    return F.gelu(gate) * value


def self_check() -> Iterator[Tuple[str, float]]:
    """(what, largest difference) of the output and both gradients against PyTorch's ops on a
    small random case (values over GELU's whole interesting range)."""
    gen = torch.Generator().manual_seed(1)
    g = (torch.randn(3, 5, 7, 11, generator=gen) * 4).requires_grad_()
    v = torch.randn(3, 5, 7, 11, generator=gen, requires_grad=True)
    gy = torch.randn(3, 5, 7, 11, generator=gen)
    with torch.enable_grad():
        ours = GeluGateCpuFunction.apply(g, v)
        mine = torch.autograd.grad(ours, (g, v), gy)
        expect = F.gelu(g) * v
        theirs = torch.autograd.grad(expect, (g, v), gy)
    for name, a, b in (("GELU gate", ours, expect), ("its grad_gate", mine[0], theirs[0]),
                       ("its grad_value", mine[1], theirs[1])):
        yield name, (a - b).abs().max().item()
