"""Output sizes other than the model's scale (dlgsanet/resample.py, ``upscale(outscale=)`` and the
CLI's --outscale/--size/--width/--height). Pillow's BICUBIC resize is the independent reference
for the filter; model passes are checked against running the model by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import dlgsanet
from core_helpers import random_model, small_config
from dlgsanet import OutputSizeError, upscale
from dlgsanet.cli import main
from dlgsanet.resample import pass_sizes, resize, target_size, upscale_rgba_to


@pytest.fixture(scope="module")
def model_x2():
    return random_model(small_config(scale=2)).eval()


def _pillow_bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C,H,W] float -> [C,h,w] with Pillow (mode "F", BICUBIC: its antialiased filter)."""
    planes = [np.asarray(Image.fromarray(c.numpy().astype(np.float32), mode=None).resize(
        (size[1], size[0]), Image.BICUBIC)) for c in x]
    return torch.from_numpy(np.stack(planes)).clamp(0, 1)


def test_target_sizes() -> None:
    assert target_size(100, 200, outscale=1.5) == (150, 300)
    assert target_size(3, 5, outscale=0.5) == (2, 3)  # 1.5 -> 2, 2.5 -> 3: halves round up
    assert target_size(100, 200, width_to=50) == (25, 50)
    assert target_size(100, 200, height_to=50) == (50, 100)
    assert target_size(100, 200, width_to=1000, height_to=300) == (300, 600)  # height limits
    assert target_size(100, 200, width_to=300, height_to=1000) == (150, 300)  # width limits
    for bad in (dict(outscale=0), dict(outscale=-2), dict(outscale=float("nan")), dict(width_to=0),
                dict(), dict(outscale=2, width_to=10)):
        with pytest.raises(OutputSizeError):
            target_size(10, 10, **bad)


def test_pass_sizes() -> None:
    assert pass_sizes(10, 20, (15, 30), 4) == [(10, 20)]  # x1.5 from x4: one pass, then down
    assert pass_sizes(10, 20, (40, 80), 4) == [(10, 20)]
    assert pass_sizes(10, 20, (80, 160), 4) == [(10, 20), (20, 40)]  # x8 from x4: 4x smaller 2nd pass
    assert pass_sizes(5, 7, (15, 21), 2) == [(5, 7), (8, 11)]  # ceil(15/2), ceil(21/2)


@pytest.mark.parametrize("size", [(13, 9), (40, 61), (7, 30)])
def test_resize_matches_pillow_bicubic(size) -> None:
    x = torch.rand(3, 20, 31)
    assert (resize(x[None], size)[0] - _pillow_bicubic(x, size)).abs().max() < 1e-4


def test_resize_does_not_bleed_transparent_colour() -> None:
    """Opaque red next to fully transparent green: no visible pixel may turn green."""
    rgba = torch.zeros(1, 4, 16, 16)
    rgba[:, 0, :, :8] = 1
    rgba[:, 3, :, :8] = 1
    rgba[:, 1, :, 8:] = 1  # green, alpha 0
    for size in ((8, 8), (5, 7), (40, 40)):
        out = resize(rgba, size, has_alpha=True)[0]
        visible = out[3] > 0.02
        assert visible.any() and out[1][visible].max() < 1e-3 and out[0][visible].min() > 0.999
        straight = _pillow_bicubic(rgba[0, 3:], size)[0]
        assert (out[3] - straight).abs().max() < 1e-4  # alpha itself: the same filter


def test_upscale_outscale_api(model_x2) -> None:
    x = torch.rand(1, 3, 11, 14)
    once = upscale(model_x2, x)
    assert torch.equal(upscale(model_x2, x, outscale=2), once)  # the model's own scale: no filter
    assert torch.equal(upscale(model_x2, x, outscale=4), upscale(model_x2, once))  # two plain passes
    half = upscale(model_x2, x, outscale=1.5)
    assert half.shape == (1, 3, 17, 21)
    assert (half[0] - _pillow_bicubic(once[0], (17, 21))).abs().max() < 1e-4
    as_bytes = upscale(model_x2, x, outscale=1.5, output_dtype=torch.uint8)
    assert as_bytes.dtype == torch.uint8 and (as_bytes.float() - half * 255).abs().max() <= 0.5 + 1e-3
    with pytest.raises(dlgsanet.ImageInputError, match="out cannot be combined"):
        upscale(model_x2, x, outscale=1.5, out=torch.empty(1, 3, 17, 21))
    with pytest.raises(OutputSizeError):
        upscale(model_x2, x, outscale=0)


def test_outscale_progress_covers_all_passes(model_x2) -> None:
    calls = []
    out = upscale(model_x2, torch.rand(1, 3, 10, 12), outscale=3, progress=lambda d, t: calls.append((d, t)))
    assert out.shape == (1, 3, 30, 36)
    (total,) = {t for _, t in calls}  # one total, known from the first call
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == total
    assert len(set(done)) >= 3  # both passes moved it, not just the end


def test_upscale_rgba_to_channels_last(model_x2) -> None:
    images = torch.rand(2, 9, 12, 4)
    out = upscale_rgba_to(model_x2, images, width=18, channels_last=True)
    assert out.shape == (2, 14, 18, 4)  # 9 * 1.5 = 13.5 -> 14
    direct = dlgsanet.upscale_rgba(model_x2, images, channels_last=True)
    expected = resize(direct.movedim(-1, 1), (14, 18), has_alpha=True).movedim(1, -1)
    assert torch.allclose(out, expected, atol=1e-6)


def _save(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return str(path)


def test_cli_output_size_options(model_x2, tmp_path) -> None:
    model = tmp_path / "m.safetensors"
    dlgsanet.save_model(model_x2, model)
    rng = np.random.default_rng(0)
    src = _save(tmp_path / "a.png", rng.integers(0, 256, (10, 16, 4), dtype=np.uint8), "RGBA")
    cases = {("--outscale", "1.5"): (24, 15), ("--outscale", "4"): (64, 40), ("--size", "40x40"): (40, 25),
             ("--width", "8"): (8, 5), ("--height", "30"): (48, 30), ("--width", "20", "--height", "20"): (20, 13)}
    for i, (option, size) in enumerate(cases.items()):
        out = tmp_path / f"o{i}.png"
        assert main(["upscale", src, "-o", str(out), "--model", str(model), "--quiet", *option]) == 0
        with Image.open(out) as im:
            assert (im.size, im.mode) == (size, "RGBA"), option


def test_cli_outscale_keeps_16_bits(model_x2, tmp_path) -> None:
    png = pytest.importorskip("png")
    model = tmp_path / "m.safetensors"
    dlgsanet.save_model(model_x2, model)
    values = (np.arange(8 * 10).reshape(8, 10) * 811 % 65536).astype(np.uint16)
    with open(tmp_path / "g.png", "wb") as f:
        png.Writer(10, 8, greyscale=True, bitdepth=16).write(f, values.tolist())
    assert main(["upscale", str(tmp_path / "g.png"), "-o", str(tmp_path / "o.png"), "--model", str(model),
                 "--quiet", "--outscale", "3"]) == 0
    width, height, _, info = png.Reader(filename=str(tmp_path / "o.png")).read()
    assert (width, height, info["bitdepth"], info["greyscale"]) == (30, 24, 16, True)
