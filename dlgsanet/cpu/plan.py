"""Which fused C++ kernels a CPU inference pass uses, decided once at its start.

A kernel is used when it serves the input (float32 on the CPU, built and checked, not turned off
or withheld: :func:`fused.usable`) and when every module it would replace has the shapes it
handles (fixed facts about the weights: 3x3 depth-wise convs, no biases where it has none).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from . import fused
from ..model.layers import GDFN, ChannelLayerNorm
from ..model.sparse_gsa import SparseGSA


def _dw3x3(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (3, 3) and conv.padding == (1, 1)


def _all(model: nn.Module, kind: type, fits: Callable[[nn.Module], bool]) -> bool:
    return all(fits(m) for m in model.modules() if isinstance(m, kind))


@dataclass(frozen=True)
class KernelPlan:
    """The fused kernels one pass uses (all False: PyTorch ops throughout)."""

    dynamic_conv: bool = False      # MHDLSA's per-pixel kernels, made and used a few pixels at a time
    mhdlsa_in_out: bool = False     # MHDLSA's LayerNorm + conv0 + hyper 1x1, and conv1 + residual
    gdfn: bool = False              # the whole feed-forward
    conv1x1_dw3x3: bool = False     # SparseGSA's qkv map
    window_attention: bool = False  # SparseGSA's attention over all TLC windows

    @classmethod
    def choose(cls, x: torch.Tensor, model: nn.Module) -> "KernelPlan":
        """The plan for running ``model`` (a network, group or block) on ``x``."""
        dynamic = fused.usable(x, kernel="dynamic_conv")
        return cls(
            dynamic_conv=dynamic,
            mhdlsa_in_out=dynamic and fused.usable(x, kernel="mhdlsa_in_out"),
            gdfn=fused.usable(x, kernel="gdfn") and _all(
                model, GDFN, lambda f: _dw3x3(f.dwconv) and f.project_in.bias is None),
            conv1x1_dw3x3=fused.usable(x, kernel="conv1x1_dw3x3") and _all(
                model, SparseGSA, lambda a: _dw3x3(a.qkv_dwconv) and a.qkv.bias is None),
            window_attention=fused.usable(x, kernel="window_attention") and _all(
                model, SparseGSA, lambda a: a.project_out.bias is None),
        )


def layer_norm_params(norm: Optional[nn.Module]) -> Optional[tuple[torch.Tensor, torch.Tensor, float]]:
    """``(weight, bias, eps)`` of a :class:`ChannelLayerNorm`, for the fused kernels that apply
    it themselves; None for any other ``norm`` (which is then applied first)."""
    if isinstance(norm, ChannelLayerNorm) and norm.body.weight is not None and norm.body.bias is not None:
        return norm.body.weight, norm.body.bias, norm.body.eps
    return None
