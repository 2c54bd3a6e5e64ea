"""Test-time Local Converter (TLC) windows, laid out exactly as the official ``grids()``.

At test time the global attention runs on windows of ``tlc_window`` pixels instead of the
whole image, matching the statistics seen on training patches. The official code loops over
windows in Python and only allows batch 1; here the windows of every image of a batch are
gathered and scattered with two ``index_select`` / ``index_add`` calls, which gives each image
exactly the result it gets alone.
"""
from __future__ import annotations

import math
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


def _axis_index(size: int, window: int, device: torch.device) -> tuple[torch.Tensor, int, int]:
    k = min(size, window)
    starts = torch.tensor(window_starts(size, window), device=device)
    index = (starts[:, None] + torch.arange(k, device=device)[None, :]).reshape(-1)
    return index, len(starts), k


def to_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple]:
    """[B, C, H, W] -> [B, nr, nc, C, kh, kw] windows, plus what ``from_windows`` needs."""
    b, c, h, w = x.shape
    rows, nr, kh = _axis_index(h, window, x.device)
    cols, nc, kw = _axis_index(w, window, x.device)
    win = x.index_select(2, rows).index_select(3, cols).view(b, c, nr, kh, nc, kw)
    return win.permute(0, 2, 4, 1, 3, 5), (rows, cols, h, w)


def from_windows(win: torch.Tensor, layout: tuple) -> torch.Tensor:
    """Average overlapping windows [B, nr, nc, C, kh, kw] back into a [B, C, H, W] map."""
    rows, cols, h, w = layout
    b, nr, nc, c, kh, kw = win.shape
    win = win.permute(0, 3, 1, 4, 2, 5).reshape(b, c, nr * kh, nc * kw)
    out = win.new_zeros(b, c, nr * kh, w).index_add_(3, cols, win)
    out = win.new_zeros(b, c, h, w).index_add_(2, rows, out)
    row_count = win.new_zeros(h).index_add_(0, rows, win.new_ones(rows.numel()))
    col_count = win.new_zeros(w).index_add_(0, cols, win.new_ones(cols.numel()))
    return out / (row_count[:, None] * col_count[None, :])
