"""PSNR and SSIM exactly as the super-resolution papers report them (BasicSR's conventions).

Public names (the eval command and the training loop's validation both use these):

- :func:`psnr_y` / :func:`ssim_y` ``(sr, hr, crop_border)`` — the paper metrics: 8-bit images,
  Y channel of YCbCr (ITU-R BT.601, studio range 16..235), ``crop_border`` pixels (= the scale)
  removed at every edge, SSIM with an 11x11 Gaussian window (sigma 1.5) in "valid" mode.
- :func:`psnr` / :func:`ssim` — the same with ``y_channel=False`` available (all channels).
- :func:`to_uint8` — a model output tensor (float, 0..1) to an 8-bit HxWxC RGB array, rounded as
  BasicSR's ``tensor2img`` does; every metric applies it to float tensors it is given.
- :func:`rgb_to_y` — the BT.601 luma used by the Y-channel metrics (float64, not rounded).

Why these exact rules: published PSNR/SSIM tables (DLGSANet's included) come from BasicSR's
``calculate_psnr`` / ``calculate_ssim`` with ``test_y_channel=True`` and ``crop_border=scale``
on 8-bit images; a different colour transform, border or window moves results by tenths of a
dB, which is the size of the differences the tables compare.

Conventions: images are RGB (BasicSR reads BGR with OpenCV and uses ``bgr2ycbcr``; converting
RGB with the RGB coefficients gives the same luma). Accepted inputs are numpy ``uint8`` arrays
HxWx3, HxWx1 or HxW, and torch tensors [3,H,W] / [1,3,H,W] (float in 0..1, quantised by
:func:`to_uint8`, or uint8). As in BasicSR, a single-channel image is taken as luma already
(no 16..235 mapping). All arithmetic is float64. BasicSR itself rounds the Y plane to float32
on the way, which moves its results very slightly (bounds in docs/evaluation.md, "Agreement
with BasicSR").
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from .errors import ImageInputError

ImageLike = Union[np.ndarray, torch.Tensor]

#: BT.601 luma coefficients for R, G, B applied to values in 0..1, giving Y in 16..235 (MATLAB's rgb2ycbcr).
Y_COEFFICIENTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
#: SSIM constants of Wang et al. (2004) for an 8-bit dynamic range L = 255.
SSIM_C1 = (0.01 * 255.0) ** 2
SSIM_C2 = (0.03 * 255.0) ** 2
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5

__all__ = ["psnr_y", "ssim_y", "psnr", "ssim", "to_uint8", "rgb_to_y", "gaussian_window",
           "Y_COEFFICIENTS", "SSIM_WINDOW", "SSIM_SIGMA"]


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def to_uint8(image: ImageLike) -> np.ndarray:
    """An 8-bit HxWxC (C = 3 or 1) RGB array from a numpy image or a [C,H,W] / [1,C,H,W] tensor.

    Float tensors are clamped to 0..1, multiplied by 255 in float32 and rounded half to even,
    exactly as BasicSR's ``tensor2img`` turns network outputs into the images it scores.
    """
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ImageInputError(f"metrics take one image at a time; got a batch of {t.shape[0]}")
            t = t[0]
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ImageInputError(f"expected an image tensor [3,H,W] or [1,3,H,W], got {tuple(image.shape)}")
        if t.dtype == torch.uint8:
            return t.permute(1, 2, 0).cpu().numpy()
        if not t.is_floating_point():
            raise ImageInputError(f"image tensors must be float (0..1) or uint8, got {t.dtype}")
        t = t.to("cpu", torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise ImageInputError("the image holds NaN or infinite values (a diverged or broken model?)")
        return (t.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ImageInputError(f"numpy images must be uint8 (8-bit, 0..255), got {image.dtype}; "
                                  f"pass float images as 0..1 torch tensors instead")
        arr = image[..., None] if image.ndim == 2 else image
        if arr.ndim != 3 or arr.shape[2] not in (1, 3):
            raise ImageInputError(f"expected an HxWx3, HxWx1 or HxW image, got shape {image.shape}")
        return arr
    raise ImageInputError(f"expected a numpy array or a torch tensor, got {type(image).__name__}")


def rgb_to_y(image: ImageLike) -> np.ndarray:
    """BT.601 luma in 16..235 (float64, HxW) of an RGB image; one channel is returned as it is."""
    arr = to_uint8(image).astype(np.float64)
    if arr.shape[2] == 1:
        return arr[..., 0]
    r, g, b = (arr[..., i] / 255.0 for i in range(3))
    cr, cg, cb = Y_COEFFICIENTS
    return r * cr + g * cg + b * cb + Y_OFFSET


def _prepare(img1: ImageLike, img2: ImageLike, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 HxWxC planes, cropped and (optionally) reduced to luma."""
    a, b = to_uint8(img1), to_uint8(img2)
    if a.shape != b.shape:
        raise ImageInputError(f"images differ in size: {a.shape[1]}x{a.shape[0]}x{a.shape[2]} vs "
                              f"{b.shape[1]}x{b.shape[0]}x{b.shape[2]} (width x height x channels)")
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ImageInputError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    h, w = a.shape[:2]
    if 2 * crop_border >= min(h, w):
        raise ImageInputError(f"crop_border {crop_border} leaves nothing of a {w}x{h} image")
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        return rgb_to_y(a)[..., None], rgb_to_y(b)[..., None]
    return a.astype(np.float64), b.astype(np.float64)


# ----------------------------------------------------------------------------------------------
# PSNR
# ----------------------------------------------------------------------------------------------
def psnr(img1: ImageLike, img2: ImageLike, crop_border: int = 0, *, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB for peak 255; ``inf`` for identical images.

    The mean squared error is taken over every remaining pixel (and channel, when
    ``y_channel`` is False), as BasicSR's ``calculate_psnr``.
    """
    a, b = _prepare(img1, img2, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0 * 255.0 / mse)


def psnr_y(sr: ImageLike, hr: ImageLike, crop_border: int) -> float:
    """The paper's PSNR: Y channel, ``crop_border`` (= scale) pixels removed at each edge."""
    return psnr(sr, hr, crop_border, y_channel=True)


# ----------------------------------------------------------------------------------------------
# SSIM
# ----------------------------------------------------------------------------------------------
def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D normalised Gaussian (float64) whose outer product is SSIM's 2-D window."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(plane: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with ``g`` in both directions, "valid" region only (no padding)."""
    n = g.size
    rows = plane.shape[0] - n + 1
    tmp = g[0] * plane[:rows]
    for i in range(1, n):
        tmp = tmp + g[i] * plane[i:i + rows]
    cols = plane.shape[1] - n + 1
    out = g[0] * tmp[:, :cols]
    for i in range(1, n):
        out = out + g[i] * tmp[:, i:i + cols]
    return out


def _ssim_plane(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
    """Mean SSIM map of two float64 planes (Wang et al. 2004, Gaussian-weighted statistics)."""
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    # E[x^2] - E[x]^2, the same (cancellation-prone but reference) formula as BasicSR and MATLAB.
    var_x = _filter_valid(x * x, g) - mu_xx
    var_y = _filter_valid(y * y, g) - mu_yy
    cov = _filter_valid(x * y, g) - mu_xy
    num = (2.0 * mu_xy + SSIM_C1) * (2.0 * cov + SSIM_C2)
    den = (mu_xx + mu_yy + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return float(np.mean(num / den))


def ssim(img1: ImageLike, img2: ImageLike, crop_border: int = 0, *, y_channel: bool = True) -> float:
    """Structural similarity (11x11 Gaussian window, sigma 1.5, valid region); 1.0 when identical.

    Several channels (``y_channel=False``) are scored separately and averaged, as BasicSR does.
    """
    a, b = _prepare(img1, img2, crop_border, y_channel)
    h, w = a.shape[:2]
    if min(h, w) < SSIM_WINDOW:
        raise ImageInputError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after cropping "
                              f"{crop_border} at each border; this image leaves {w}x{h}")
    g = gaussian_window()
    return float(np.mean([_ssim_plane(a[..., c], b[..., c], g) for c in range(a.shape[2])]))


def ssim_y(sr: ImageLike, hr: ImageLike, crop_border: int) -> float:
    """The paper's SSIM: Y channel, ``crop_border`` (= scale) pixels removed at each edge."""
    return ssim(sr, hr, crop_border, y_channel=True)
