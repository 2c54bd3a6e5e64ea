"""TileSettings (dlgsanet/tiling/settings.py): one value from the front ends down to the engine."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from tiling_helpers import PixelModel, whole

from dlgsanet import upscale
from dlgsanet.alpha import upscale_rgba
from dlgsanet.errors import TileSettingsError
from dlgsanet.tiling import TileSettings, is_out_of_memory
from dlgsanet.tiling.settings import (BORDER_PAD, DEFAULT_OVERLAP, MIN_TILE_SIZE, parse_tile_size,
                                      split_keywords, tile_settings)


def test_defaults_and_none_mean_the_same():
    assert TileSettings(overlap=None, border_pad=None) == TileSettings()
    assert TileSettings().overlap == DEFAULT_OVERLAP and TileSettings().pad == BORDER_PAD
    assert TileSettings(border="official").pad == 0


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TileSettings().tile_size = 128  # type: ignore[misc]


@pytest.mark.parametrize("kwargs", [dict(border="zero"), dict(border_pad=-1), dict(border_pad=True)])
def test_border_settings_are_checked_where_made(kwargs):
    with pytest.raises(TileSettingsError, match="border"):
        TileSettings(**kwargs)


@pytest.mark.parametrize("value, expected", [(None, None), (0, None), ("0", None), (" Auto ", None),
                                             ("128", 128), (MIN_TILE_SIZE, MIN_TILE_SIZE)])
def test_parse_tile_size(value, expected):
    assert parse_tile_size(value) == expected


@pytest.mark.parametrize("value", ["50", "big", -1, "1.5"])
def test_parse_tile_size_refuses(value):
    with pytest.raises(TileSettingsError):
        parse_tile_size(value)


@pytest.mark.parametrize("tile, overlap, expected", [
    (0, 32, (None, 32)), (None, 200, (None, MIN_TILE_SIZE - 1)), (50, 64, (MIN_TILE_SIZE, 48)),
    (256, 200, (256, 128)), (256, None, (256, DEFAULT_OVERLAP)),
])
def test_clamped_brings_slider_values_into_range(tile, overlap, expected):
    tiles = TileSettings.clamped(tile, overlap, border="official")
    assert (tiles.tile_size, tiles.overlap, tiles.border) == (*expected, "official")


def test_tiles_or_keywords_not_both():
    tiles = TileSettings(tile_size=128)
    assert tile_settings(tiles) is tiles
    assert tile_settings(None, tile_size=128) == tiles
    assert tile_settings(tiles, overlap=None, border_pad=None) is tiles  # defaults are not a conflict
    with pytest.raises(TileSettingsError, match="either"):
        tile_settings(tiles, overlap=8)
    with pytest.raises(TileSettingsError, match="TileSettings"):
        tile_settings({"tile_size": 128})  # type: ignore[arg-type]
    settings, rest = split_keywords({"tile_size": 128, "runner": print})
    assert settings == tiles and rest == {"runner": print}


def test_tiles_keyword_gives_what_the_separate_keywords_give():
    model = PixelModel(2)
    x = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    kw = dict(tile_size=16, overlap=4, min_tile_size=16, border="official")
    assert torch.equal(upscale(model, x, tiles=TileSettings(**kw)), upscale(model, x, **kw))
    torch.testing.assert_close(upscale(model, x, tiles=TileSettings(**kw)), whole(model, x), atol=1e-6, rtol=0)
    rgba = torch.rand(1, 4, 20, 30, generator=torch.Generator().manual_seed(1))
    assert torch.equal(upscale_rgba(model, rgba, alpha="model", tiles=TileSettings(**kw)),
                       upscale_rgba(model, rgba, alpha="model", **kw))


def test_out_of_memory_predicates_from_the_host():
    class HostOOM(Exception):
        pass

    def host_says(exc: BaseException) -> bool:
        return "host ran out" in str(exc)

    assert is_out_of_memory(HostOOM(), (HostOOM,))
    assert is_out_of_memory(ValueError("host ran out"), (host_says,))
    assert not is_out_of_memory(ValueError("shape"), (host_says, HostOOM))
