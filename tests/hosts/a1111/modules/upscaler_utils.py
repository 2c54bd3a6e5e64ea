"""Stand-in for A1111 1.10.1 ``modules/upscaler_utils.py``: ``upscale_with_model``, the tiled
helper of the ESRGAN path. Written from the real file's behaviour (not copied).

1.10.1 runs each patch under ``torch.inference_mode()`` (PR #16275). 1.10.0 used ``no_grad``,
which made every spandrel upscale on the CPU fail with "Inplace update to inference tensor
outside InferenceMode" (A1111 issue #16274), since spandrel's descriptor returns an inference
tensor that ``torch_bgr_to_pil_image`` clamps in place.

The real helper feeds the model **BGR** (a leftover from ESRGAN): PIL RGB -> BGR float 0..1 ->
model -> clamp -> round -> RGB PIL. ``tile_size <= 0`` means one pass; otherwise the image is
cut with ``images.split_grid`` and stitched with ``images.combine_grid``; progress is a tqdm
bar (disabled by ``opts.enable_upscale_progressbar``) and an interrupt returns the *input*.
"""
from __future__ import annotations

import numpy as np
import torch
import tqdm
from PIL import Image

from modules import devices, images, shared, torch_utils


def pil_image_to_torch_bgr(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB"))[:, :, ::-1].transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr) / 255)


def torch_bgr_to_pil_image(tensor: torch.Tensor) -> Image.Image:
    if tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"{tensor.shape} does not describe a BCHW tensor")
        tensor = tensor.squeeze(0)
    arr = 255.0 * np.moveaxis(tensor.float().cpu().clamp_(0, 1).numpy(), 0, 2)
    return Image.fromarray(arr.round().astype(np.uint8)[:, :, ::-1], "RGB")


def upscale_pil_patch(model, img: Image.Image) -> Image.Image:
    param = torch_utils.get_param(model)
    with torch.inference_mode():
        tensor = pil_image_to_torch_bgr(img).unsqueeze(0).to(device=param.device, dtype=param.dtype)
        with devices.without_autocast():
            return torch_bgr_to_pil_image(model(tensor))


def upscale_with_model(model, img: Image.Image, *, tile_size: int, tile_overlap: int = 0, desc="tiled upscale") -> Image.Image:
    if tile_size <= 0:
        return upscale_pil_patch(model, img)
    grid = images.split_grid(img, tile_size, tile_size, tile_overlap)
    new_rows = []
    with tqdm.tqdm(total=grid.tile_count, desc=desc, disable=not shared.opts.enable_upscale_progressbar) as p:
        for y, h, row in grid.tiles:
            new_row = []
            for x, w, tile in row:
                if shared.state.interrupted:
                    return img
                out = upscale_pil_patch(model, tile)
                factor = out.width // tile.width
                new_row.append([x * factor, w * factor, out])
                p.update(1)
            new_rows.append([y * factor, h * factor, new_row])
    return images.combine_grid(images.Grid(new_rows, tile_w=grid.tile_w * factor, tile_h=grid.tile_h * factor,
                                           image_w=grid.image_w * factor, image_h=grid.image_h * factor,
                                           overlap=grid.overlap * factor))
