"""Bands of image rows: how CPU inference keeps the blocks' wide intermediates in cache.

Each block runs band by band of rows: its intermediates (4*dim channels in the feed-forward,
K*K*G per-pixel kernels, ...) are made and consumed one band at a time, so they stay in cache and
no image-sized buffer is allocated for them. A band carries the few extra rows that its
convolutions need on each side (their "halo"); those rows are computed with the image's zero
padding and thrown away, so every kept row sees exactly the inputs it sees in a whole-image pass.
Bands depend on the image width only, never on the batch, so an image gets the same bits alone
and in a batch.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch

#: Largest factor by which many threads enlarge the bands (the per-pixel kernel band then holds
#: at most 8 x 8 MiB).
MAX_BAND_SCALE = 8


def row_bands(height: int, rows: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """Bands ``[r0, r1)`` of at most ``rows`` rows, of near-equal heights (no thin last band),
    with their support ``[a0, a1)``: ``halo`` rows more on each side, clipped to the image."""
    bands = -(-height // max(1, rows))
    for i in range(bands):
        r0, r1 = i * height // bands, (i + 1) * height // bands
        yield r0, r1, max(0, r0 - halo), min(height, r1 + halo)


def band_rows(width: int, channels: int, budget: int, minimum: int = 8) -> int:
    """Rows per band so that a band of ``channels`` channels holds about ``budget`` floats, scaled
    by :func:`thread_band_scale` (at least ``minimum`` rows, so that the halo stays a small share
    of the work)."""
    return max(minimum, budget * thread_band_scale() // max(1, width * channels))


def thread_band_scale(threads: Optional[int] = None) -> int:
    """How much larger bands are with ``threads`` torch threads (default: the current count).

    The band budgets were tuned on one core, where a band's intermediates should stay in that
    core's cache. With more threads every op of a band is split between them, so each thread's
    share shrinks while the fork/join and oneDNN set-up cost per op stays: larger bands are faster
    there (figures in docs/performance.md). Capped so that memory stays bounded on many cores.
    """
    threads = torch.get_num_threads() if threads is None else threads
    return 1 if threads <= 1 else min(MAX_BAND_SCALE, 2 * threads)
