"""Test-time Local Converter (TLC) windows, laid out exactly as the official ``grids()``.

At test time the global attention runs on windows of ``tlc_window`` pixels instead of the
whole image, matching the statistics seen on training patches. The official code loops over
windows in Python, pastes them back one by one, and only allows batch 1. Here the layout is
computed once per image size as a flat pixel index (cached), and the windows of every image of
a batch are gathered with ONE ``index_select`` of whole channels-last pixel rows and summed back
with ONE ``index_add_``; each pixel is then divided by the number of windows that cover it, as
the official count map does. Every image gets exactly the windows it gets alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch


@lru_cache(maxsize=256)
def window_starts(size: int, window: int) -> tuple[int, ...]:
    """Start offsets of the TLC windows along one axis (the official loop, one dimension).

    Windows are ``min(size, window)`` long, spread with a constant step, the last one snapped
    to the border (so windows may overlap).
    """
    k = min(size, window)
    count = (size - 1) // k + 1
    step = k if count == 1 else math.ceil((size - k) / (count - 1) - 1e-8)
    starts = []
    i = 0
    while i < size:
        if i + k >= size:
            starts.append(size - k)
            break
        starts.append(i)
        i += step
    return tuple(starts)


@dataclass(frozen=True)
class WindowPlan:
    """Where the TLC windows of an ``height x width`` map are (row-major, like ``grids()``).

    ``index``: flat pixel index ``[count * pixels]``, window after window, each window row-major;
    ``coverage``: ``[height, width, 1]`` number of windows covering each pixel.
    """

    height: int
    width: int
    count: int
    window_h: int
    window_w: int
    index: torch.Tensor
    coverage: torch.Tensor

    @property
    def pixels(self) -> int:
        return self.window_h * self.window_w

    def batch_index(self, batch: int) -> torch.Tensor:
        """The flat index into a ``[batch * height * width, C]`` view, image after image."""
        if batch == 1:
            return self.index
        offsets = torch.arange(batch, device=self.index.device) * (self.height * self.width)
        return (offsets[:, None] + self.index[None, :]).reshape(-1)


def _plan(height: int, width: int, window: int, device: torch.device) -> WindowPlan:
    rows = torch.tensor(window_starts(height, window))
    cols = torch.tensor(window_starts(width, window))
    kh, kw = min(height, window), min(width, window)
    r = (rows[:, None] + torch.arange(kh)[None, :])          # [nr, kh]
    c = (cols[:, None] + torch.arange(kw)[None, :])          # [nc, kw]
    index = (r[:, None, :, None] * width + c[None, :, None, :]).reshape(-1)   # [nr, nc, kh, kw]
    coverage = torch.zeros(height * width).index_add_(0, index, torch.ones(index.numel()))
    return WindowPlan(height, width, rows.numel() * cols.numel(), kh, kw, index.to(device),
                      coverage.view(height, width, 1).to(device))


@lru_cache(maxsize=64)
def _cached_plan(height: int, width: int, window: int, device: str) -> WindowPlan:
    return _plan(height, width, window, torch.device(device))


def window_plan(height: int, width: int, window: int, device: torch.device) -> WindowPlan:
    """The (cached) :class:`WindowPlan` for a map size, TLC window and device."""
    return _cached_plan(height, width, window, str(device))


def needs_windows(height: int, width: int, window: int) -> bool:
    """False when TLC is off or one window covers the whole map (then it IS the whole map)."""
    return bool(window) and (height > window or width > window)


def gather_windows(x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """Channels-last ``[B, H, W, C]`` -> windows ``[B * count, pixels, C]`` (one gather)."""
    b, h, w, c = x.shape
    return x.reshape(b * h * w, c).index_select(0, plan.batch_index(b)).view(b * plan.count, plan.pixels, c)


def scatter_windows(windows: torch.Tensor, plan: WindowPlan, batch: int) -> torch.Tensor:
    """Windows ``[B * count, pixels, C]`` -> their per-pixel sum ``[B, H, W, C]`` (one scatter).

    Divide by ``plan.coverage`` for the official average.
    """
    c = windows.shape[-1]
    total = windows.new_zeros(batch * plan.height * plan.width, c)
    total.index_add_(0, plan.batch_index(batch), windows.reshape(-1, c))
    return total.view(batch, plan.height, plan.width, c)
