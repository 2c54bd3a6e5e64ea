"""Test-time Local Converter (TLC) windows, laid out exactly as the official ``grids()``.

At test time the global attention runs on windows of ``tlc_window`` pixels instead of the
whole image, matching the statistics seen on training patches. The official code loops over
windows in Python, pastes them back one by one, and only allows batch 1. Here the layout is
computed once per image size as a flat pixel index (cached), and the windows of every image of
a batch are gathered with one ``index_select`` of whole channels-last pixel rows and summed back
with one ``index_add_`` (CPU inference does this in chunks of whole windows, ``dlgsanet.cpu``);
each pixel is then divided by the number of windows that cover it, as the official count map
does. Every image gets exactly the windows it gets alone.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Optional

import torch

#: ``(top, left, height, width)`` of the whole image while the network runs on a tile of it.
_FRAME: ContextVar[Optional[tuple[int, int, int, int]]] = ContextVar("dlgsanet_tlc_frame", default=None)


@contextmanager
def tlc_frame(top: int, left: int, height: int, width: int) -> Iterator[None]:
    """Lay TLC windows out as for the whole ``height x width`` image while the network runs on
    a tile of it whose first pixel is (``top``, ``left``) (tiled inference, ``tiling/engine.py``).

    A tile run as an image of its own gets a window layout that depends on its size. In a frame
    it gets the whole image's windows instead, so away from its edges it attends exactly as the
    whole image does; a window that crosses the tile edge is shifted inside the tile (a clipped
    window would be small, and the attention statistics of a few rows of pixels are far off).
    """
    token = _FRAME.set((int(top), int(left), int(height), int(width)))
    try:
        yield
    finally:
        _FRAME.reset(token)


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
    ``coverage``: ``[height, width, 1]`` number of windows covering each pixel; ``row_starts`` x
    ``col_starts``: the windows' top-left corners (the same windows, for the fused CPU kernel).
    """

    height: int
    width: int
    count: int
    window_h: int
    window_w: int
    index: torch.Tensor
    coverage: torch.Tensor
    row_starts: tuple[int, ...] = ()
    col_starts: tuple[int, ...] = ()

    @property
    def pixels(self) -> int:
        return self.window_h * self.window_w

    def batch_index(self, batch: int) -> torch.Tensor:
        """The flat index into a ``[batch * height * width, C]`` view, image after image."""
        if batch == 1:
            return self.index
        offsets = torch.arange(batch, device=self.index.device) * (self.height * self.width)
        return (offsets[:, None] + self.index[None, :]).reshape(-1)


@lru_cache(maxsize=256)
def framed_starts(size: int, window: int, offset: int, full: int) -> tuple[int, ...]:
    """Window starts along one axis of a map of ``size`` that begins at ``offset`` of a ``full``
    axis: the whole axis' windows that reach the map, each crossing the map's edge shifted
    inside it, duplicates dropped. ``framed_starts(n, w, 0, n) == window_starts(n, w)``."""
    if offset < 0 or offset + size > full:
        raise ValueError(f"TLC frame: a map of {size} pixels at {offset} does not fit in {full}")
    k, reach = min(size, window), min(full, window)
    return tuple(sorted({min(max(s - offset, 0), size - k) for s in window_starts(full, window)
                         if s < offset + size and s + reach > offset}))


def _plan(height: int, width: int, window: int, device: torch.device,
          frame: Optional[tuple[int, int, int, int]] = None) -> WindowPlan:
    top, left, full_h, full_w = frame or (0, 0, height, width)
    rows = torch.tensor(framed_starts(height, window, top, full_h))
    cols = torch.tensor(framed_starts(width, window, left, full_w))
    kh, kw = min(height, window), min(width, window)
    r = (rows[:, None] + torch.arange(kh)[None, :])          # [nr, kh]
    c = (cols[:, None] + torch.arange(kw)[None, :])          # [nc, kw]
    index = (r[:, None, :, None] * width + c[None, :, None, :]).reshape(-1)   # [nr, nc, kh, kw]
    coverage = torch.zeros(height * width).index_add_(0, index, torch.ones(index.numel()))
    return WindowPlan(height, width, rows.numel() * cols.numel(), kh, kw, index.to(device),
                      coverage.view(height, width, 1).to(device), tuple(rows.tolist()), tuple(cols.tolist()))


#: A plan of a 256^2 tile holds about 1 MB of indices, and a tiled image asks for one per tile
#: position (its own frame); a small cache still serves every block of a forward pass.
@lru_cache(maxsize=16)
def _cached_plan(height: int, width: int, window: int, device: str,
                 frame: Optional[tuple[int, int, int, int]]) -> WindowPlan:
    return _plan(height, width, window, torch.device(device), frame)


def window_plan(height: int, width: int, window: int, device: torch.device) -> WindowPlan:
    """The (cached) :class:`WindowPlan` for a map size, TLC window and device; inside a
    :func:`tlc_frame`, the whole image's layout seen from the tile."""
    return _cached_plan(height, width, window, str(device), _FRAME.get())


def needs_windows(height: int, width: int, window: int) -> bool:
    """False when TLC is off or one window covers the whole map (then it IS the whole map)."""
    return bool(window) and (height > window or width > window)

