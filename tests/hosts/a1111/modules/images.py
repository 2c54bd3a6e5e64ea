"""Stand-in for A1111 1.10 ``modules/images.py``: the tiling grid and ``resize_image``.

Written from the real file's behaviour (not copied):

* ``split_grid`` cuts an image into ``tile_w x tile_h`` tiles spaced evenly, the last row and
  column snapped to the border; ``combine_grid`` pastes them back, blending each overlap with a
  linear ramp (used by ``upscaler_utils.upscale_with_model``, i.e. the ESRGAN path).
* ``resize_image(resize_mode, im, width, height, upscaler_name)`` is how hires fix, img2img and
  SD upscale call an upscaler: with ``scale = max(w / im.width, h / im.height)`` — a float —
  only when it is > 1, then a LANCZOS resize to exactly (w, h). Grayscale ("L") images and
  ``force_RGBA`` skip the upscaler.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from PIL import Image

from modules import shared
from modules.shared import opts  # noqa: F401  (the real module reads opts.upscaler_for_img2img)

LANCZOS = getattr(Image, "Resampling", Image).LANCZOS


class Grid(namedtuple("_Grid", ["tiles", "tile_w", "tile_h", "image_w", "image_h", "overlap"])):
    @property
    def tile_count(self) -> int:
        return sum(len(row[2]) for row in self.tiles)


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    count = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (count - 1) if count > 1 else 0
    starts = [int(i * step) for i in range(count)]
    return [size - tile if s + tile >= size else s for s in starts]  # last one snapped to the border


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    w, h = image.size
    grid = Grid([], tile_w, tile_h, w, h, overlap)
    for y in _starts(h, tile_h, overlap):
        row = [[x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))] for x in _starts(w, tile_w, overlap)]
        grid.tiles.append([y, tile_h, row])
    return grid


def combine_grid(grid: Grid) -> Image.Image:
    def ramp(shape: tuple[int, int], axis: int) -> Image.Image:
        r = np.arange(grid.overlap, dtype=np.float32) * 255 / grid.overlap
        r = np.broadcast_to(r[None, :] if axis == 1 else r[:, None], shape)
        return Image.fromarray(np.ascontiguousarray(r).astype(np.uint8), "L")

    mask_w = ramp((grid.tile_h, grid.overlap), 1)
    mask_h = ramp((grid.overlap, grid.image_w), 0)
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        line = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0:
                line.paste(tile, (0, 0))
                continue
            line.paste(tile.crop((0, 0, grid.overlap, h)), (x, 0), mask=mask_w)
            line.paste(tile.crop((grid.overlap, 0, w, h)), (x + grid.overlap, 0))
        if y == 0:
            combined.paste(line, (0, 0))
            continue
        combined.paste(line.crop((0, 0, line.width, grid.overlap)), (0, y), mask=mask_h)
        combined.paste(line.crop((0, grid.overlap, line.width, h)), (0, y + grid.overlap))
    return combined


def resize_image(resize_mode, im, width, height, upscaler_name=None, force_RGBA=False):
    """Resize modes 0 (stretch) and 1 (crop to fill) of the real function; mode 2 (fill) is not
    needed by the tests."""
    upscaler_name = upscaler_name or shared.opts.upscaler_for_img2img

    def resize(im, w, h):
        if upscaler_name is None or upscaler_name == "None" or im.mode == "L" or force_RGBA:
            return im.resize((w, h), resample=LANCZOS)
        scale = max(w / im.width, h / im.height)
        if scale > 1.0:
            matches = [x for x in shared.sd_upscalers if x.name == upscaler_name]
            upscaler = matches[0] if matches else shared.sd_upscalers[0]
            im = upscaler.scaler.upscale(im, scale, upscaler.data_path)
        if im.width != w or im.height != h:
            im = im.resize((w, h), resample=LANCZOS)
        return im

    if resize_mode == 0:
        return resize(im, width, height)
    if resize_mode == 1:
        ratio, src_ratio = width / height, im.width / im.height
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB" if not force_RGBA else "RGBA", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res
    raise NotImplementedError("resize_mode 2 is not part of the stand-in")
