"""The shared RGBA helper (dlgsanet/alpha.py): colour through the engine, alpha apart, re-attached."""
from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from tiling_helpers import LocalModel, PixelModel, one_thread, whole

from dlgsanet import ImageInputError, UpscaleCancelled, upscale
from dlgsanet.alpha import resize_alpha_bicubic, upscale_rgba

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
# border="official": colour compared with model(x) itself (no border padding).
TILES = dict(tile_size=16, overlap=4, min_tile_size=4, border="official")


def bicubic(alpha: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(alpha, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_rgba_colour_goes_through_the_model_and_alpha_is_bicubic(channels_last):
    model = LocalModel(scale=2)
    x = torch.rand(2, 4, 150, 37)  # taller than one alpha strip
    inp = x.movedim(1, -1).contiguous() if channels_last else x
    y = upscale_rgba(model, inp, channels_last=channels_last, **TILES)
    assert y.shape == ((2, 300, 74, 4) if channels_last else (2, 4, 300, 74)) and y.dtype == x.dtype
    y = y.movedim(-1, 1) if channels_last else y
    torch.testing.assert_close(y[:, :3], whole(model, x[:, :3]), atol=2e-6, rtol=0)
    torch.testing.assert_close(y[:, 3:], bicubic(x[:, 3:], 2), atol=1e-6, rtol=0)


def test_rgb_passes_straight_through_in_both_layouts():
    model = PixelModel(scale=2)
    x = torch.rand(1, 3, 20, 30)
    torch.testing.assert_close(upscale_rgba(model, x), upscale(model, x))
    y = upscale_rgba(model, x.movedim(1, -1), channels_last=True, output_dtype=torch.uint8)
    assert y.shape == (1, 40, 60, 3) and y.is_contiguous() and y.dtype == torch.uint8
    y = upscale_rgba(model, x.movedim(1, -1), channels_last=True)
    torch.testing.assert_close(y.movedim(-1, 1), upscale(model, x))


def test_alpha_through_the_model_and_progress_over_both_passes():
    model, calls = PixelModel(scale=3), []
    x = torch.rand(1, 4, 30, 20)
    y = upscale_rgba(model, x, alpha="model", progress=lambda d, t: calls.append((d, t)), **TILES)
    ref = model(x[:, 3:].expand(-1, 3, -1, -1)).mean(1, keepdim=True).clamp(0, 1)
    torch.testing.assert_close(y[:, 3:], ref.detach(), atol=1e-6, rtol=0)
    n = calls[0][1] // 2
    assert calls == [(i, 2 * n) for i in range(0, 2 * n + 1)]  # (0, total) first, once per tile


def test_flat_alpha_stays_exactly_flat_in_uint8():
    x = torch.rand(1, 4, 33, 21)
    x[:, 3, :, :10] = 1.0
    x[:, 3, :, 10:] = 0.0
    y = upscale_rgba(PixelModel(2), x, output_dtype=torch.uint8, **TILES)
    assert y.dtype == torch.uint8
    assert bool((y[:, 3, :, :16] == 255).all()) and bool((y[:, 3, :, 24:] == 0).all())


def test_strips_match_whole_image_bicubic_for_any_height():
    for h in (1, 2, 63, 64, 65, 130):
        a = torch.rand(2, 1, h, 9)
        out = torch.empty(2, 1, 4 * h, 36)
        torch.testing.assert_close(resize_alpha_bicubic(a, 4, out), bicubic(a, 4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_cancel_during_the_alpha_pass_releases_the_buffer(channels_last):
    checks = []

    def cancel():
        checks.append(1)
        return len(checks) > 1  # the colour pass (one tile) runs, the alpha pass is cancelled

    x = torch.rand(1, 4, 23, 19)
    with pytest.raises(UpscaleCancelled) as info:
        upscale_rgba(PixelModel(2), x.movedim(1, -1) if channels_last else x, channels_last=channels_last,
                     cancel=cancel)
    assert info.value.__traceback__ is not None and len(checks) == 2
    gc.collect()
    shape = (1, 46, 38, 4) if channels_last else (1, 4, 46, 38)
    assert not [o for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and tuple(o.shape) == shape]


@pytest.mark.parametrize("images,kwargs", [
    (torch.rand(1, 2, 8, 8), {}), (torch.rand(1, 8, 8, 4), {}),  # [B,H,W,C] without channels_last
    (torch.rand(1, 4, 8, 8), dict(channels_last=True)), (torch.rand(4, 8, 8), {}),
    (torch.zeros(1, 4, 8, 8, dtype=torch.uint8), {}), (torch.rand(1, 4, 8, 8), dict(alpha="nearest")),
])
def test_bad_inputs_raise_our_error(images, kwargs):
    with pytest.raises(ImageInputError):
        upscale_rgba(PixelModel(2), images, **kwargs)
