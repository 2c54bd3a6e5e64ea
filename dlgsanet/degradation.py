"""The paper's degradation: bicubic resizing with MATLAB ``imresize`` semantics.

The benchmark LR images (and BasicSR's ``matlab_functions.imresize``) use MATLAB's cubic
kernel (a = -0.5), widened by 1/scale when shrinking (antialiasing), with symmetric
("half-sample mirror") edge handling. A 1-D resize with those rules is a fixed
``[out, in]`` matrix, so an image resize is two matrix products: fast and exact.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Union

import numpy as np
import torch

Image = Union[np.ndarray, torch.Tensor]


def cubic(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's cubic convolution kernel (Keys, a = -0.5)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=256)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool) -> torch.Tensor:
    """The ``[out_len, in_len]`` float64 matrix of a 1-D MATLAB bicubic resize."""
    widen = antialiasing and scale < 1
    kernel_width = 4.0 / scale if widen else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # output pixel centre in input coordinates (1-based)
    left = torch.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    weights = scale * cubic(dist * scale) if widen else cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric edges as MATLAB: index 0 -> 1, -1 -> 2, in_len+1 -> in_len, ...
    i0 = idx.long() - 1
    period = 2 * in_len
    i0 = torch.remainder(i0, period)
    i0 = torch.where(i0 >= in_len, period - 1 - i0, i0)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, i0, weights)
    return matrix


def resize_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool = True) -> torch.Tensor:
    """Public view of the 1-D resize operator (a copy: the cached one must not be mutated)."""
    return _resize_matrix(int(in_len), int(out_len), float(scale), bool(antialiasing)).clone()


def output_size(size: int, scale: float) -> int:
    """MATLAB's output length: ``ceil(size * scale)`` (ignoring float noise such as 300 * (1/3))."""
    return int(math.ceil(size * scale - 1e-9))


def _resize_chw(img: torch.Tensor, scale: float, antialiasing: bool) -> torch.Tensor:
    """Resize the last two dims of a float tensor ``[..., H, W]``."""
    h, w = img.shape[-2:]
    oh, ow = output_size(h, scale), output_size(w, scale)
    dtype = img.dtype if img.dtype in (torch.float32, torch.float64) else torch.float32
    mh = _resize_matrix(h, oh, float(scale), antialiasing).to(img.device, dtype)
    mw = _resize_matrix(w, ow, float(scale), antialiasing).to(img.device, dtype)
    return torch.matmul(torch.matmul(mh, img.to(dtype)), mw.transpose(0, 1))


def imresize(img: Image, scale: float, antialiasing: bool = True) -> Image:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of a float image (values unclipped, unrounded).

    numpy input is ``[H, W]`` or ``[H, W, C]`` (BasicSR's layout) and gives numpy back; torch
    input is ``[..., H, W]`` (channels first) and gives torch back.
    """
    if scale <= 0:
        raise ValueError(f"imresize: scale must be positive, got {scale}")
    if isinstance(img, torch.Tensor):
        return _resize_chw(img, scale, antialiasing)
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize: expected an [H, W] or [H, W, C] array, got shape {arr.shape}")
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype))
    chw = t if arr.ndim == 2 else t.permute(2, 0, 1)
    out = _resize_chw(chw, scale, antialiasing)
    out = out if arr.ndim == 2 else out.permute(1, 2, 0)
    return out.contiguous().numpy()


def mod_crop(img: Image, scale: int) -> Image:
    """Crop bottom/right so H and W are multiples of ``scale`` (BasicSR's ``mod_crop``).

    Layouts as :func:`imresize`: numpy ``[H, W]`` / ``[H, W, C]``, torch ``[..., H, W]``.
    """
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2:]
        return img[..., : h - h % scale, : w - w % scale]
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Round 0..1 floats to 8 bits as MATLAB does (half up), as uint8."""
    return torch.clamp(torch.floor(img * 255.0 + 0.5), 0, 255).to(torch.uint8)


def bicubic_degrade(hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR cropped to a multiple of ``scale``, its 8-bit LR) from an 8-bit ``[..., 3, H, W]`` HR.

    The LR is rounded to 8 bits because the benchmark LR images are stored as 8-bit PNGs;
    training on the same quantised inputs avoids a train/test mismatch.
    """
    if hr.dtype != torch.uint8:
        raise ValueError(f"bicubic_degrade expects an 8-bit image tensor, got {hr.dtype}")
    hr = mod_crop(hr, scale)
    if hr.shape[-1] < scale or hr.shape[-2] < scale:
        raise ValueError(f"image of size {tuple(hr.shape[-2:])} is smaller than the scale {scale}")
    lr = _resize_chw(hr.to(torch.float64) / 255.0, 1.0 / scale, True)
    return hr, quantize(lr)
