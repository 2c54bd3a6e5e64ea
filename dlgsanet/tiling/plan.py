"""Tile geometry and blending weights for tiled inference.

Why tiles overlap and are blended: DLGSANet's receptive field is large (the global attention
runs on TLC windows of 48 input pixels at x4, on top of nine 7x7 dynamic convolutions), so a
tile's output is only trustworthy away from the tile's edges. Neighbouring tiles therefore
overlap, and inside each overlap the output fades from one tile to the next with a smooth
(raised-cosine) ramp. Tiles at the image border keep their full size and are shifted inside
the image, so every tile gives the network the same amount of context.

Weights are separable: ``w(y, x) = wy(y) * wx(x)``. Each axis' weights are normalised so they
sum to exactly 1 at every position, so their products do too on the 2-D grid. No weight
accumulator is needed and the image border is never darkened (a border pixel is covered by
tiles whose ramps all face inwards, hence by weight 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import torch

from ..errors import TileSettingsError
from .settings import DEFAULT_RAMP, is_whole


def axis_starts(size: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Start offsets of the tiles along one axis of ``size`` pixels.

    Tiles are ``min(tile, size)`` long. Their count is the smallest that keeps every overlap
    >= ``overlap``; starts are spread evenly (the first at 0, the last at ``size - tile``) so
    the overlaps are all equal up to one pixel instead of one odd-sized tile at the end.
    """
    if size < 1:
        raise TileSettingsError(f"cannot tile an axis of {size} pixels")
    tile = min(tile, size)
    if tile == size:
        return (0,)
    step = tile - overlap
    if step < 1:
        raise TileSettingsError(f"overlap {overlap} must be smaller than the tile size {tile}")
    count = math.ceil((size - tile) / step) + 1
    span = size - tile
    # Integer division keeps every step <= ceil(span / (count - 1)) <= step, so overlap holds.
    return tuple((i * span) // (count - 1) for i in range(count))


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis, in input pixels: tile ``i`` covers ``[starts[i], starts[i] + tile)``."""

    size: int
    tile: int
    starts: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.starts)

    def span(self, i: int) -> tuple[int, int]:
        return self.starts[i], self.starts[i] + self.tile

    def next_start(self, i: int) -> int:
        """Where tile ``i + 1`` begins (``size`` for the last tile): the end of what ``i`` finalises."""
        return self.starts[i + 1] if i + 1 < len(self.starts) else self.size


def plan_axis(size: int, tile: int, overlap: int) -> AxisPlan:
    return AxisPlan(size, min(tile, size), axis_starts(size, tile, overlap))


@dataclass(frozen=True)
class TilePlan:
    """A grid of equal tiles over an ``height`` x ``width`` image (input pixels)."""

    rows: AxisPlan
    cols: AxisPlan

    @property
    def height(self) -> int:
        return self.rows.size

    @property
    def width(self) -> int:
        return self.cols.size

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def boxes(self) -> Iterator[tuple[int, int, int, int]]:
        """``(y0, y1, x0, x1)`` of every tile in row-major order."""
        for i in range(len(self.rows)):
            y0, y1 = self.rows.span(i)
            for j in range(len(self.cols)):
                x0, x1 = self.cols.span(j)
                yield y0, y1, x0, x1


def plan_tiles(height: int, width: int, tile_size: int, overlap: int) -> TilePlan:
    """The tile grid for an image: a single tile when the image fits in one."""
    if not is_whole(tile_size) or tile_size < 1 or not is_whole(overlap) or overlap < 0:
        raise TileSettingsError(f"bad tile size {tile_size!r} or overlap {overlap!r}")
    return TilePlan(plan_axis(height, tile_size, overlap), plan_axis(width, tile_size, overlap))


def _ramp(length: int, ramp: float) -> torch.Tensor:
    """Rising weights over an overlap of ``length`` output pixels (0 -> 1, sampled at pixel centres).

    Raised cosine over the central ``ramp`` fraction, 0 before it and 1 after it. ``1 - r``
    reversed is the falling ramp of the other tile, so a pair sums to 1 by itself.
    """
    width = max(ramp * length, 1e-6)
    lead = (length - width) / 2
    u = ((torch.arange(length, dtype=torch.float64) + 0.5 - lead) / width).clamp(0, 1)
    return 0.5 - 0.5 * torch.cos(math.pi * u)


@lru_cache(maxsize=64)
def _axis_weights_cached(size: int, tile: int, starts: tuple[int, ...], scale: int,
                         ramp: float) -> tuple[torch.Tensor, ...]:
    n, t = size * scale, tile * scale
    s_out = [s * scale for s in starts]
    raw = []
    for i, s in enumerate(s_out):
        w = torch.ones(t, dtype=torch.float64)
        if i > 0:  # overlap with the previous tile: rise over [s, end of previous)
            length = s_out[i - 1] + t - s
            if length > 0:
                w[:length] *= _ramp(length, ramp)
        if i + 1 < len(s_out):  # overlap with the next tile: fall over [start of next, end)
            length = s + t - s_out[i + 1]
            if length > 0:
                w[t - length:] *= 1 - _ramp(length, ramp)
        raw.append(w)
    total = torch.zeros(n, dtype=torch.float64)
    for s, w in zip(s_out, raw):
        total[s:s + t] += w
    # A pixel of a non-degenerate plan always has some tile with positive weight (each ramp is
    # matched by its neighbour's complement); the clamp only guards against 0/0.
    total.clamp_(min=1e-12)
    return tuple((w / total[s:s + t]).to(torch.float32) for s, w in zip(s_out, raw))


def axis_weights(axis: AxisPlan, scale: int, ramp: float = DEFAULT_RAMP) -> tuple[torch.Tensor, ...]:
    """Per-tile blending weights along one axis in OUTPUT pixels (``tile * scale`` each).

    At every output position the weights of the tiles covering it sum to 1.
    """
    if not 0 < ramp <= 1:
        raise TileSettingsError(f"ramp must be in (0, 1], got {ramp!r}")
    return _axis_weights_cached(axis.size, axis.tile, axis.starts, scale, float(ramp))


def mirror_index(size: int, start: int, stop: int) -> torch.Tensor:
    """Source pixel of each position ``start..stop-1`` of an axis of ``size`` pixels mirrored
    about its outer edges (``cba|abcd|dcba``: the edge pixel repeats, as numpy's and MATLAB's
    "symmetric"). Positions may be negative or >= ``size`` (the border padding); the mirroring
    repeats as often as needed, so any pad works on any size (a 1-pixel axis repeats that pixel).

    Why not ``torch.nn.functional.pad``'s "reflect" (``dcb|abcd|cba``): it needs the pad to be
    smaller than the image, and on photographs it puts a mirrored ridge at every border that
    the network sharpens into an artefact (figures in docs/tiling.md, "Image borders").
    """
    if size < 1:
        raise TileSettingsError(f"cannot mirror an axis of {size} pixels")
    i = torch.arange(start, stop).remainder(2 * size)
    return torch.where(i >= size, 2 * size - 1 - i, i)
