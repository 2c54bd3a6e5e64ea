"""The feed-forward (GDFN) in CPU inference: one fused pass, or band by band of rows."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from . import fused
from .bands import band_rows, row_bands
from .plan import KernelPlan, layer_norm_params
from .workspace import Workspace, new_output
from ..model.layers import GDFN, conv1x1

#: Floats per band of the feed-forward's hidden halves (512k = 2 MiB).
FFN_BAND_ELEMENTS = 1 << 19


def gdfn(ffn: GDFN, norm: nn.Module, x: torch.Tensor, residual: torch.Tensor, workspace: Optional[Workspace],
         kernels: KernelPlan) -> torch.Tensor:
    """``residual + ffn(norm(x))``.

    With the fused C++ kernel (:func:`fused.gdfn`) the whole feed-forward, LayerNorm included, is
    one pass that keeps the 4*dim-channel intermediate of three rows at a time in cache. Otherwise
    it runs band by band of rows with the module's own ops (halo 1 row for the 3x3 depth-wise
    conv; ``norm`` is per pixel, so it is applied per band too).
    """
    h = ffn.hidden_features
    b, _, w, _ = x.shape
    out = new_output(residual, workspace)
    if kernels.gdfn and x.is_contiguous() and residual.is_contiguous():
        params = layer_norm_params(norm)  # the LayerNorm then runs inside the kernel too
        return fused.gdfn(x if params else norm(x), residual, out, ffn.project_in.weight, ffn.dwconv.weight,
                          ffn.dwconv.bias, ffn.project_out.weight, ffn.project_out.bias, params)
    for r0, r1, a0, a1 in row_bands(x.shape[1], band_rows(w, h, FFN_BAND_ELEMENTS), 1):
        band = norm(x[:, a0:a1])
        kept = slice(r0 - a0, r1 - a0)
        gated = ffn.gate(ffn.half(band, slice(0, h))[:, kept], ffn.half(band, slice(h, 2 * h))[:, kept])
        proj = conv1x1(gated, ffn.project_out.weight, ffn.project_out.bias)
        torch.add(proj, residual[:, r0:r1], out=out[:, r0:r1])
    return out
