"""Building blocks shared by both attention blocks: channel LayerNorm and the GDFN feed-forward."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel of an NCHW map (biased variance, eps 1e-5).

    The parameters live in ``body`` (an ``nn.LayerNorm``) so the official key names
    ``normX.body.weight`` / ``normX.body.bias`` load unchanged.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.body.normalized_shape, self.body.weight,
                         self.body.bias, self.body.eps)
        return y.permute(0, 3, 1, 2)


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network (Restormer): 1x1 expand, 3x3 depth-wise, GELU gate, 1x1."""

    def __init__(self, dim: int, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2,
                                bias=False)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)
