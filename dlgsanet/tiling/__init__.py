"""Tiled inference: images of any size in bounded memory, with no seams.

- ``settings``: :class:`TileSettings`, every tiling knob as one validated value, and the defaults;
- ``plan``: where the tiles go and how their outputs are weighted (pure geometry);
- ``memory``: tile-size policy (automatic size, out-of-memory halving, what counts as one);
- ``engine``: :func:`run_tiled`, which streams the tiles through the network.

Hosts import from here: ``TileSettings`` (or its defaults for their widgets) and
``is_out_of_memory``, whose ``oom_types`` they pass to ``dlgsanet.upscale``.
"""
from .engine import run_tiled
from .memory import is_out_of_memory
from .settings import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, MIN_TILE_SIZE, TileSettings

__all__ = ["TileSettings", "DEFAULT_TILE_SIZE", "DEFAULT_OVERLAP", "MIN_TILE_SIZE", "is_out_of_memory",
           "run_tiled"]
