"""Stand-in networks for the tiling tests: small, deterministic, with a known receptive field.

They are test models, not stand-ins for our code: the engine treats them like any network with
a ``scale`` attribute. A pixel-wise model makes every tiling exact; a model with a k x k conv has
a receptive radius of k // 2 input pixels, so tiled and whole-image outputs agree exactly once
the zero-weight part of each overlap is at least that wide.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PixelModel(nn.Module):
    """x -> nearest-neighbour upscale of a per-channel affine map (receptive field: one pixel)."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.gain = nn.Parameter(torch.tensor([0.9, 1.0, 1.1]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x * self.gain + 0.02, scale_factor=self.scale, mode="nearest")


class LocalModel(nn.Module):
    """A fixed k x k conv (zero padding) then pixel shuffle: receptive radius k // 2 input pixels."""

    def __init__(self, scale: int = 2, kernel: int = 3, channels: int = 3) -> None:
        super().__init__()
        self.scale = scale
        gen = torch.Generator().manual_seed(1234)
        self.conv = nn.Conv2d(channels, channels * scale * scale, kernel, padding=kernel // 2)
        with torch.no_grad():
            weight = torch.rand(self.conv.weight.shape, generator=gen)
            self.conv.weight.copy_(weight / (channels * kernel * kernel))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), self.scale)


def whole(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model on the whole image at once, clamped: what tiling must reproduce."""
    with torch.no_grad():
        return model(images).clamp(0, 1)


def one_thread():
    """Generator for a module fixture: one intra-op thread. On a shared, oversubscribed CPU torch's
    second thread spins at barriers and makes small tensor ops up to ~80x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_dlgsanet(scale: int = 2, tlc_window: int = 8) -> nn.Module:
    """A one-block DLGSANet (dim 8, 3x3 dynamic kernels) in eval mode, with sharp attention.

    Its output depends on the TLC window layout, so it tells whether tiles use the whole image's
    windows. Receptive field: 5 pixels of convolutions before the attention, 4 after, so a pixel
    is exact in a tile once it lies window - 1 + 5 + 4 = window + 8 pixels from the tile's edge.
    Shallow and small-weighted, it is not chaotic the way a deep random network is.
    """
    from dlgsanet import DLGSANet, DLGSANetConfig
    config = DLGSANetConfig(dim=8, groups=1, blocks=1, local_heads=2, global_heads=2, window=3,
                            scale=scale, tlc_window=tlc_window)
    torch.manual_seed(7)
    model = DLGSANet(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "temperature" in name:
                p.fill_(8.0)
    return model.eval()


def structured(height: int, width: int, batch: int = 1) -> torch.Tensor:
    """Smooth patterns plus a little noise: window statistics vary with position, as in photos
    (uniform noise looks alike in every window and would hide a wrong window layout)."""
    y = torch.arange(height, dtype=torch.float32).view(height, 1)
    x = torch.arange(width, dtype=torch.float32).view(1, width)
    base = torch.stack([torch.sin(y / 3 + x / 11), torch.cos(x / 4 - y / 9), torch.sin(x * y / 50)])
    gen = torch.Generator().manual_seed(height * 1000 + width)
    noise = torch.rand((batch, 3, height, width), generator=gen)
    return (0.5 + 0.4 * base + 0.1 * noise).clamp(0, 1)
