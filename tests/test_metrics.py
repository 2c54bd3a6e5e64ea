"""dlgsanet.metrics: PSNR/SSIM as BasicSR computes them for the paper's tables.

Expected values come from closed forms worked out here, from the BT.601 standard, from an
independent brute-force SSIM written in this file, and from BasicSR itself
(tests/fixtures/metrics_basicsr/reference.json, made by make_reference.py next to it).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dlgsanet.errors import ImageInputError
from dlgsanet.metrics import gaussian_window, psnr, psnr_y, rgb_to_y, ssim, ssim_y, to_uint8

FIXTURES = Path(__file__).parent / "fixtures" / "metrics_basicsr"
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _random_image(h: int, w: int, seed: int, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (h, w, 3), dtype=np.uint8)


def _y_of_grey(v: float) -> float:
    """Luma of an RGB grey (v, v, v): the BT.601 coefficients sum to 219 over the 16..235 range."""
    return 16.0 + 219.0 * v / 255.0


# ---------------------------------------------------------------------------------------------
# known values
# ---------------------------------------------------------------------------------------------
def test_identical_images_give_inf_psnr_and_unit_ssim() -> None:
    img = _random_image(40, 37, 1)
    assert psnr_y(img, img.copy(), 4) == math.inf
    assert ssim_y(img, img.copy(), 4) == 1.0
    assert psnr(img, img, 0, y_channel=False) == math.inf
    assert ssim(img, img, 0, y_channel=False) == 1.0


@pytest.mark.parametrize("shift", [1, 3, 17])
@pytest.mark.parametrize("crop", [0, 2, 4])
def test_constant_shift_gives_the_hand_computed_psnr(shift: int, crop: int) -> None:
    hr = _random_image(30, 34, 2, low=0, high=256 - shift)
    sr = hr + np.uint8(shift)  # no wrap-around: values stay <= 255
    # Y difference of an RGB shift by d is d * (65.481 + 128.553 + 24.966) / 255 = d * 219 / 255.
    expected_y = 20 * math.log10(255.0 / (shift * 219.0 / 255.0))
    assert psnr_y(sr, hr, crop) == pytest.approx(expected_y, abs=1e-9)
    assert psnr(sr, hr, crop, y_channel=False) == pytest.approx(20 * math.log10(255.0 / shift), abs=1e-9)


@pytest.mark.parametrize("a,b", [(0, 255), (100, 110), (200, 90)])
def test_ssim_of_flat_images_matches_the_closed_form(a: int, b: int) -> None:
    # Flat images have zero variance and covariance, so SSIM = (2 ya yb + C1) / (ya^2 + yb^2 + C1).
    img_a = np.full((24, 26, 3), a, np.uint8)
    img_b = np.full((24, 26, 3), b, np.uint8)
    ya, yb = _y_of_grey(a), _y_of_grey(b)
    assert ssim_y(img_a, img_b, 2) == pytest.approx((2 * ya * yb + C1) / (ya**2 + yb**2 + C1), rel=1e-12)


def test_rgb_to_y_matches_bt601_for_primaries() -> None:
    # ITU-R BT.601 studio-range luma (MATLAB rgb2ycbcr): black 16, white 235, primaries 16 + coefficient.
    colours = {(0, 0, 0): 16.0, (255, 255, 255): 235.0, (255, 0, 0): 81.481,
               (0, 255, 0): 144.553, (0, 0, 255): 40.966}
    img = np.array([list(colours)], dtype=np.uint8)  # 1 x 5 x 3, RGB order
    np.testing.assert_allclose(rgb_to_y(img)[0], list(colours.values()), atol=1e-9)


def test_channel_order_is_rgb() -> None:
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    black = np.zeros_like(red)
    # Only the R coefficient (65.481) separates red from black if the input is read as RGB;
    # reading it as BGR would use the B coefficient (24.966).
    assert psnr_y(red, black, 0) == pytest.approx(20 * math.log10(255 / 65.481), abs=1e-9)


def test_single_channel_images_are_scored_as_they_are() -> None:
    # BasicSR's to_y_channel leaves one-channel images untouched (no 16..235 mapping).
    a = np.full((20, 20), 100, np.uint8)
    b = np.full((20, 20, 1), 104, np.uint8)
    assert psnr_y(a, b, 0) == pytest.approx(20 * math.log10(255 / 4), abs=1e-9)


@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_crop_border_removes_each_edge(side: int) -> None:
    hr = _random_image(32, 36, 3)
    sr = hr.copy()
    region = {"top": np.s_[:4], "bottom": np.s_[-4:], "left": np.s_[:, :4], "right": np.s_[:, -4:]}[side]
    sr[region] = 255 - sr[region]
    assert psnr_y(sr, hr, 4) == math.inf
    assert ssim_y(sr, hr, 4) == 1.0
    assert math.isfinite(psnr_y(sr, hr, 3))
    assert ssim_y(sr, hr, 3) < 1.0


# ---------------------------------------------------------------------------------------------
# SSIM against an independent brute-force implementation
# ---------------------------------------------------------------------------------------------
def _ssim_brute_force(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.: Gaussian-weighted local statistics at every 11x11 window fully inside the image."""
    r = np.arange(11) - 5
    w2 = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w2 /= w2.sum()
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (w2 * px).sum(), (w2 * py).sum()
            vx, vy = (w2 * (px - mx) ** 2).sum(), (w2 * (py - my) ** 2).sum()
            cxy = (w2 * (px - mx) * (py - my)).sum()
            values.append(((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    return float(np.mean(values))


@pytest.mark.parametrize("h,w,crop", [(11, 11, 0), (19, 24, 2), (23, 17, 3)])
def test_ssim_matches_brute_force(h: int, w: int, crop: int) -> None:
    hr = _random_image(h, w, 4)
    noise = np.random.default_rng(5).normal(0, 20, hr.shape)
    sr = np.clip(hr + noise, 0, 255).round().astype(np.uint8)
    c = np.s_[crop:h - crop, crop:w - crop]
    expected_y = _ssim_brute_force(rgb_to_y(sr[c]), rgb_to_y(hr[c]))
    assert ssim_y(sr, hr, crop) == pytest.approx(expected_y, abs=1e-12)
    expected_rgb = np.mean([_ssim_brute_force(sr[c][..., k].astype(float), hr[c][..., k].astype(float))
                            for k in range(3)])
    assert ssim(sr, hr, crop, y_channel=False) == pytest.approx(expected_rgb, abs=1e-12)


def test_gaussian_window_is_normalised_with_sigma_1_5() -> None:
    g = gaussian_window()
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(g, g[::-1], rtol=0, atol=0)
    assert g[5] / g[4] == pytest.approx(math.exp(1 / (2 * 1.5**2)), rel=1e-13)


# ---------------------------------------------------------------------------------------------
# agreement with BasicSR (values computed by BasicSR 1.4.2, see the fixture's make_reference.py)
# ---------------------------------------------------------------------------------------------
def _reference_pairs() -> list[dict]:
    return json.loads((FIXTURES / "reference.json").read_text())["pairs"]


@pytest.mark.parametrize("pair", _reference_pairs(), ids=lambda p: p["name"])
def test_agrees_with_basicsr(pair: dict) -> None:
    sr = np.asarray(Image.open(FIXTURES / pair["sr"]).convert("RGB"))
    hr = np.asarray(Image.open(FIXTURES / pair["hr"]).convert("RGB"))
    crop = pair["crop_border"]
    assert psnr_y(sr, hr, crop) == pytest.approx(pair["psnr_y"], abs=1e-4)
    assert ssim_y(sr, hr, crop) == pytest.approx(pair["ssim_y"], abs=1e-5)
    assert psnr(sr, hr, crop, y_channel=False) == pytest.approx(pair["psnr_rgb"], abs=1e-4)
    assert ssim(sr, hr, crop, y_channel=False) == pytest.approx(pair["ssim_rgb"], abs=1e-5)


# ---------------------------------------------------------------------------------------------
# tensors: quantised as BasicSR's tensor2img (clamp, x255 in float32, round half to even)
# ---------------------------------------------------------------------------------------------
def test_float_tensors_are_quantised_like_tensor2img() -> None:
    levels = torch.arange(256, dtype=torch.float32) / 255.0
    t = torch.stack([levels, levels.flip(0), levels]).view(3, 16, 16)
    out = to_uint8(t)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out[..., 0].ravel(), np.arange(256))
    np.testing.assert_array_equal(out[..., 1].ravel(), np.arange(255, -1, -1))
    probe = torch.tensor([-0.5, 1.7, 2.4 / 255, 2.6 / 255, 200.3 / 255, 200.7 / 255]).view(1, 1, 6).expand(3, 1, 6)
    np.testing.assert_array_equal(to_uint8(probe[None])[0, :, 0], [0, 255, 2, 3, 200, 201])


def test_tensor_and_array_inputs_score_the_same() -> None:
    hr = _random_image(28, 30, 6)
    sr = np.clip(hr.astype(int) + np.random.default_rng(7).integers(-9, 10, hr.shape), 0, 255).astype(np.uint8)
    as_tensor = torch.from_numpy(sr.transpose(2, 0, 1).copy()).float() / 255.0
    assert psnr_y(as_tensor, hr, 2) == psnr_y(sr, hr, 2)
    assert ssim_y(as_tensor[None], torch.from_numpy(hr).permute(2, 0, 1), 2) == ssim_y(sr, hr, 2)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(12, 20), st.integers(12, 20))
def test_metrics_are_symmetric_and_bounded(seed: int, h: int, w: int) -> None:
    a, b = _random_image(h, w, seed), _random_image(h, w, seed + 1)
    assert psnr_y(a, b, 0) == pytest.approx(psnr_y(b, a, 0), abs=1e-12)
    s = ssim_y(a, b, 0)
    assert s == pytest.approx(ssim_y(b, a, 0), abs=1e-12)
    assert -1.0 <= s <= 1.0


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b,crop,message", [
    (np.zeros((20, 20, 3), np.uint8), np.zeros((20, 21, 3), np.uint8), 0, "differ in size"),
    (np.zeros((20, 20, 3), np.float32), np.zeros((20, 20, 3), np.float32), 0, "must be uint8"),
    (np.zeros((20, 20, 4), np.uint8), np.zeros((20, 20, 4), np.uint8), 0, "HxWx3"),
    (np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 3), np.uint8), 10, "leaves nothing"),
    (np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 3), np.uint8), -1, "non-negative"),
    (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), 0, "batch of 2"),
    (torch.full((3, 8, 8), float("nan")), torch.zeros(3, 8, 8), 0, "NaN"),
    ([[1, 2]], [[1, 2]], 0, "numpy array or a torch tensor"),
])
def test_bad_inputs_raise_clear_errors(a, b, crop: int, message: str) -> None:
    with pytest.raises(ImageInputError, match=message):
        psnr_y(a, b, crop)


def test_ssim_needs_a_full_window() -> None:
    img = _random_image(20, 20, 8)
    with pytest.raises(ImageInputError, match="at least 11x11"):
        ssim_y(img, img, 5)  # 10x10 left
