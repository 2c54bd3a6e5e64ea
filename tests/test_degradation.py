"""MATLAB-bicubic degradation: against values checked with BasicSR's matlab_functions.imresize.

The fixture ``fixtures/imresize_basicsr.npz`` holds a 20x17 8-bit RGB test image and BasicSR's
float outputs for it (x1/2, x1/3, x1/4 down with antialiasing, x2 up), produced once by running
BasicSR's own file in a scratch folder (not part of this repository).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dlgsanet.degradation import bicubic_degrade, imresize, mod_crop, quantize, resize_matrix

FIXTURE = Path(__file__).parent / "fixtures" / "imresize_basicsr.npz"
CASES = {"down2": 1 / 2, "down3": 1 / 3, "down4": 1 / 4, "up2": 2.0}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", sorted(CASES))
def test_imresize_matches_basicsr(reference: dict[str, np.ndarray], name: str) -> None:
    x = reference["input"].astype(np.float64) / 255.0
    ours = imresize(x, CASES[name])
    ref = reference[name].astype(np.float64)
    assert ours.shape == ref.shape
    # BasicSR computes in float32; we agree to float32 precision ...
    assert np.abs(ours - ref).max() < 1e-5
    # ... and hence within one grey level once both are rounded to 8 bits.
    q = lambda a: np.clip(np.floor(a * 255 + 0.5), 0, 255)  # noqa: E731
    assert np.abs(q(ours) - q(ref)).max() <= 1


def test_torch_and_numpy_layouts_agree(reference: dict[str, np.ndarray]) -> None:
    x = reference["input"].astype(np.float64) / 255.0
    chw = torch.from_numpy(x).permute(2, 0, 1)
    out = imresize(chw, 0.25)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), imresize(x, 0.25), atol=1e-12)


def test_constant_image_stays_constant() -> None:
    img = np.full((13, 11, 3), 0.37)
    for scale in (0.25, 1 / 3, 0.5, 2.0, 4.0):
        assert np.abs(imresize(img, scale) - 0.37).max() < 1e-12


def test_resize_matrix_is_a_normalised_operator() -> None:
    m = resize_matrix(40, 10, 0.25)
    assert m.shape == (10, 40)
    torch.testing.assert_close(m.sum(dim=1), torch.ones(10, dtype=torch.float64))
    # the antialiasing kernel spans 16 input pixels plus rounding slack
    assert int((m[5] != 0).sum()) >= 16


def test_bicubic_degrade_crops_to_a_multiple_of_the_scale() -> None:
    hr = torch.randint(0, 256, (3, 30, 27), dtype=torch.uint8)
    cropped, lr = bicubic_degrade(hr, 4)
    assert cropped.shape == (3, 28, 24) and lr.shape == (3, 7, 6) and lr.dtype == torch.uint8
    assert torch.equal(cropped, mod_crop(hr, 4))
    expected = quantize(imresize(cropped.double() / 255.0, 0.25))
    assert torch.equal(lr, expected)


def test_bicubic_degrade_rejects_float_input() -> None:
    with pytest.raises(ValueError, match="8-bit"):
        bicubic_degrade(torch.rand(3, 8, 8), 2)


def test_imresize_rejects_bad_shapes_and_scales() -> None:
    with pytest.raises(ValueError):
        imresize(np.zeros((2, 3, 4, 5)), 0.5)
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), 0)
