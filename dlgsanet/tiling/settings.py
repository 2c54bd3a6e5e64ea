"""How an image is tiled, as one value: :class:`TileSettings`.

Why one frozen value: the same eight knobs used to be spelled out by every front end and again
at every level down to the engine. Validating them once, where they are made, means the engine
and every host can take a ``TileSettings`` as it comes; the settings are reasons to change the
output, so they are also what a test or a host compares, logs and passes on.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Union

from ..errors import TileSettingsError

#: Tile side in input pixels that front ends offer when the user asks for tiles (docs/tiling.md).
DEFAULT_TILE_SIZE = 256
#: Overlap between neighbouring tiles in input pixels (docs/tiling.md).
DEFAULT_OVERLAP = 32
#: Smallest tile side the engine will go down to (explicitly or after out-of-memory retries).
MIN_TILE_SIZE = 96
#: Fraction of each overlap over which the weights ramp (centred in the overlap). The rest of
#: the overlap is given entirely to the tile whose edge is farther away, whose output there is
#: more accurate.
DEFAULT_RAMP = 0.5
#: ``border`` values: "mirror" pads the image by mirroring (right colours at the border);
#: "official" runs it unpadded, bit for bit what ``model(x)`` gives.
BORDER_MODES = ("mirror", "official")
DEFAULT_BORDER = "mirror"
#: Input pixels mirrored onto each side with ``border="mirror"`` (the knee, docs/tiling.md).
BORDER_PAD = 8
#: What users type for "choose the tile size automatically".
AUTO_WORDS = ("0", "auto")


def is_whole(value: object) -> bool:
    """An ``int`` that is not a ``bool`` (True would otherwise pass as a tile size of 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TileSettings:
    """Everything that decides how an image is cut into tiles and blended back (input pixels).

    - ``tile_size``: None = the whole image when it fits in free memory, else the largest tile
      that fits (``memory.py``); an int forces tiles of that side.
    - ``overlap``: pixels shared by neighbouring tiles; ``min_tile_size``: the smallest tile
      asked for or reached by out-of-memory halving; ``ramp``: share of each overlap the blend
      fades over; ``align_tlc``: give each tile the whole image's TLC windows.
    - ``border``/``border_pad``: "mirror" pads the image by ``border_pad`` mirrored pixels per
      side, "official" runs it as it is.
    - ``memory_budget``: bytes one tile may use, instead of the measured free memory.

    ``overlap=None`` and ``border_pad=None`` mean their defaults. Invalid values raise
    :class:`TileSettingsError` here, so a ``TileSettings`` that exists can always tile.
    """

    tile_size: Optional[int] = None
    overlap: int = DEFAULT_OVERLAP
    min_tile_size: int = MIN_TILE_SIZE
    ramp: float = DEFAULT_RAMP
    align_tlc: bool = True
    border: str = DEFAULT_BORDER
    border_pad: int = BORDER_PAD
    memory_budget: Optional[int] = None

    def __post_init__(self) -> None:
        if self.overlap is None:
            object.__setattr__(self, "overlap", DEFAULT_OVERLAP)
        if self.border_pad is None:
            object.__setattr__(self, "border_pad", BORDER_PAD)
        tile, overlap, smallest = self.tile_size, self.overlap, self.min_tile_size
        if not is_whole(smallest) or smallest < 1:
            raise TileSettingsError(f"min_tile_size must be an integer >= 1, got {smallest!r}")
        if not is_whole(overlap) or overlap < 0:
            raise TileSettingsError(f"overlap must be an integer >= 0, got {overlap!r}")
        if overlap >= smallest and tile is None:
            raise TileSettingsError(f"overlap ({overlap}) must be smaller than min_tile_size ({smallest})")
        if tile is not None:
            if not is_whole(tile) or tile < smallest:
                raise TileSettingsError(f"tile_size must be an integer >= {smallest} "
                                        f"(min_tile_size), got {tile!r}")
            if overlap >= tile:
                raise TileSettingsError(f"overlap ({overlap}) must be smaller than tile_size ({tile})")
        if not isinstance(self.ramp, (int, float)) or not 0 < self.ramp <= 1:
            raise TileSettingsError(f"ramp must be in (0, 1], got {self.ramp!r}")
        if self.border not in BORDER_MODES:
            raise TileSettingsError(f"border must be one of {BORDER_MODES}, got {self.border!r}")
        if not is_whole(self.border_pad) or self.border_pad < 0:
            raise TileSettingsError(f"border_pad must be an integer >= 0 (input pixels), "
                                    f"got {self.border_pad!r}")

    @property
    def pad(self) -> int:
        """Input pixels mirrored onto each side of the image (0 for ``border="official"``)."""
        return 0 if self.border == "official" else self.border_pad

    @classmethod
    def clamped(cls, tile_size: Optional[int], overlap: Optional[int], **others) -> TileSettings:
        """Settings from a host's sliders, brought into range instead of refused: a tile size of
        0 or None is automatic, a smaller one becomes ``MIN_TILE_SIZE``, and the overlap is cut
        to half the tile (below ``MIN_TILE_SIZE`` when the size is automatic)."""
        overlap = DEFAULT_OVERLAP if overlap is None else overlap
        if not tile_size:
            return cls(None, min(overlap, MIN_TILE_SIZE - 1), **others)
        tile_size = max(tile_size, MIN_TILE_SIZE)
        return cls(tile_size, min(overlap, tile_size // 2), **others)


#: The ``upscale()`` keywords that make up a :class:`TileSettings`.
KEYWORDS = tuple(f.name for f in fields(TileSettings))


def tile_settings(tiles: Optional[TileSettings] = None, **keywords) -> TileSettings:
    """``tiles``, or the settings the separate tile keywords (``KEYWORDS``) of ``upscale`` give.

    Both at once is refused unless the keywords are all at their defaults, so no setting is
    silently dropped.
    """
    given = TileSettings(**keywords)
    if tiles is None:
        return given
    if not isinstance(tiles, TileSettings):
        raise TileSettingsError(f"tiles must be a dlgsanet.tiling.TileSettings, got {type(tiles).__name__}")
    if given != TileSettings():
        raise TileSettingsError(f"give either tiles= or the tile keywords ({', '.join(KEYWORDS)}), not both")
    return tiles


def split_keywords(kwargs: dict) -> tuple[TileSettings, dict]:
    """(the settings, the other keywords) of a front end's ``**kwargs`` meant for ``upscale``."""
    rest = dict(kwargs)
    mine = {name: rest.pop(name) for name in KEYWORDS if name in rest}
    return tile_settings(rest.pop("tiles", None), **mine), rest


def parse_tile_size(value: Union[int, str, None]) -> Optional[int]:
    """A tile size as users give it: None, 0, "0" or "auto" = automatic (None); else a whole
    number of at least ``MIN_TILE_SIZE`` input pixels (TileSettingsError otherwise)."""
    if value is None or str(value).strip().lower() in AUTO_WORDS:
        return None
    try:
        tile = int(value)
    except (TypeError, ValueError):
        raise TileSettingsError(f"tile size must be 0 or auto, or a whole number of input "
                                f"pixels, got {value!r}") from None
    return TileSettings(tile_size=tile, overlap=0).tile_size
