"""Tile geometry and blending weights (dlgsanet/tiling/plan.py), property-based where it fits."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlgsanet.errors import TileSettingsError
from dlgsanet.tiling.plan import axis_starts, axis_weights, plan_axis, plan_tiles
from dlgsanet.tiling.settings import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, MIN_TILE_SIZE
from dlgsanet.tiling.settings import TileSettings as check_settings  # settings check themselves


@st.composite
def axis_cases(draw, max_size: int = 1000):
    tile = draw(st.integers(1, 96))
    overlap = draw(st.integers(0, tile - 1))
    size = draw(st.integers(1, max_size))
    return size, tile, overlap


@settings(max_examples=150, deadline=None)
@given(axis_cases())
def test_starts_cover_the_axis_with_full_size_tiles_and_enough_overlap(case):
    size, tile, overlap = case
    starts = axis_starts(size, tile, overlap)
    t = min(tile, size)
    assert starts[0] == 0 and starts[-1] + t == size  # border tiles full-size, shifted inside
    assert list(starts) == sorted(set(starts))
    for a, b in zip(starts, starts[1:]):
        assert a + t - b >= overlap  # every overlap at least what was asked
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts:
        covered[s:s + t] = True
    assert bool(covered.all())
    if len(starts) > 1:  # minimal: one tile fewer could not keep the overlap
        fewer = len(starts) - 1
        assert fewer == 1 or t + (fewer - 1) * (t - overlap) < size


@settings(max_examples=80, deadline=None)
@given(axis_cases(max_size=400), st.integers(1, 4), st.sampled_from([0.25, 0.5, 1.0]))
def test_weights_sum_to_one_everywhere_and_borders_are_not_darkened(case, scale, ramp):
    size, tile, overlap = case
    axis = plan_axis(size, tile, overlap)
    weights = axis_weights(axis, scale, ramp)
    total = torch.zeros(size * scale, dtype=torch.float64)
    for s, w in zip(axis.starts, weights):
        assert w.shape == (axis.tile * scale,)
        assert float(w.min()) >= 0 and float(w.max()) <= 1 + 1e-6
        total[s * scale:(s + axis.tile) * scale] += w.double()
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    assert float(weights[0][0]) == pytest.approx(1) and float(weights[-1][-1]) == pytest.approx(1)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 40), st.integers(1, 4))
def test_blend_is_smooth_across_an_overlap(overlap, scale):
    """The weight of a tile changes by at most pi/(2*ramp width) per output pixel (no hard cut)."""
    tile, ramp = 3 * overlap + 7, 0.5
    axis = plan_axis(2 * tile - overlap, tile, overlap)
    w0 = axis_weights(axis, scale, ramp)[0].double()
    width = ramp * (axis.starts[0] + axis.tile - axis.starts[1]) * scale
    steps = (w0[1:] - w0[:-1]).abs()
    assert float(steps.max()) <= math.pi / (2 * width) + 1e-6
    assert float(w0[-1]) <= 0.5 / width  # the far side of the overlap belongs to the other tile


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(6, 128), st.data())
def test_plan_covers_every_pixel_and_2d_weights_sum_to_one(height, width, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    plan = plan_tiles(height, width, tile, overlap)
    coverage = torch.zeros(height, width)
    boxes = list(plan.boxes())
    assert len(boxes) == len(plan) == len(plan.rows) * len(plan.cols)
    for y0, y1, x0, x1 in boxes:
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        assert (y1 - y0, x1 - x0) == (min(tile, height), min(tile, width))
        coverage[y0:y1, x0:x1] += 1
    assert bool((coverage > 0).all())
    # separable weights: products over the grid sum to 1
    wy, wx = axis_weights(plan.rows, 1), axis_weights(plan.cols, 1)
    total = torch.zeros(height, width, dtype=torch.float64)
    for i, (y0, y1) in enumerate(map(plan.rows.span, range(len(plan.rows)))):
        for j, (x0, x1) in enumerate(map(plan.cols.span, range(len(plan.cols)))):
            total[y0:y1, x0:x1] += wy[i].double()[:, None] * wx[j].double()[None, :]
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


@pytest.mark.parametrize("height,width", [(1, 1), (1, 5000), (5000, 1), (3, 977), (96, 96), (257, 256)])
def test_extreme_shapes(height, width):
    plan = plan_tiles(height, width, DEFAULT_TILE_SIZE, DEFAULT_OVERLAP)
    step = DEFAULT_TILE_SIZE - DEFAULT_OVERLAP
    for axis, size in ((plan.rows, height), (plan.cols, width)):
        assert axis.tile == min(size, DEFAULT_TILE_SIZE)
        expected = 1 if size <= DEFAULT_TILE_SIZE else math.ceil((size - DEFAULT_TILE_SIZE) / step) + 1
        assert len(axis) == expected


def test_image_smaller_than_tile_is_a_single_tile_even_when_overlap_exceeds_it():
    plan = plan_tiles(5, 7, 64, 32)
    assert list(plan.boxes()) == [(0, 5, 0, 7)]
    (w,) = axis_weights(plan.rows, 4)
    assert torch.equal(w, torch.ones(20))


@pytest.mark.parametrize("kwargs", [
    dict(overlap=-1), dict(overlap=1.5), dict(overlap=8, tile_size=8), dict(overlap=0, tile_size=0),
    dict(overlap=4, tile_size=True), dict(overlap=4, tile_size=64, min_tile_size=96),
    dict(overlap=4, ramp=0), dict(overlap=4, ramp=1.5), dict(overlap=4, min_tile_size=0),
    dict(overlap=200),  # auto tiles could never be larger than the overlap
])
def test_bad_settings_raise_our_error(kwargs):
    with pytest.raises(TileSettingsError):
        check_settings(**kwargs)


def test_defaults_are_consistent():
    check_settings(overlap=DEFAULT_OVERLAP, tile_size=DEFAULT_TILE_SIZE, min_tile_size=MIN_TILE_SIZE)
    check_settings(overlap=DEFAULT_OVERLAP, tile_size=MIN_TILE_SIZE, min_tile_size=MIN_TILE_SIZE)
    assert MIN_TILE_SIZE <= DEFAULT_TILE_SIZE
