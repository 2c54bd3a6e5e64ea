"""The network against the official outputs, and its own invariants."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import OFFICIAL_FIXTURES
from core_helpers import random_model, small_config
import dlgsanet
from dlgsanet import DLGSANet, preset_config
from dlgsanet.model.tlc import window_starts

FIXTURE_PTH = OFFICIAL_FIXTURES / "tiny_x4.pth"
FIXTURE_IO = OFFICIAL_FIXTURES / "tiny_x4.io.safetensors"
needs_fixtures = pytest.mark.skipif(not FIXTURE_IO.exists(), reason=f"official fixtures not found at {OFFICIAL_FIXTURES}")


@needs_fixtures
@pytest.mark.parametrize("case", [0, 1])
def test_matches_official_outputs(case: int) -> None:
    model = dlgsanet.load_model(FIXTURE_PTH)
    io = load_file(str(FIXTURE_IO))
    with torch.no_grad():
        out = model(io[f"input_{case}"])
    assert out.shape == io[f"output_{case}"].shape
    assert (out - io[f"output_{case}"]).abs().max().item() < 1e-4


@needs_fixtures
def test_params_instead_of_params_ema_gives_different_output() -> None:
    """The fixture's ``params`` are noisy copies; loading them must not match (proves we pick EMA)."""
    raw = torch.load(FIXTURE_PTH, weights_only=True)
    io = load_file(str(FIXTURE_IO))
    model = dlgsanet.load_model(raw["params"])
    with torch.no_grad():
        assert (model(io["input_0"]) - io["output_0"]).abs().max().item() > 1e-3


@pytest.mark.parametrize("preset,params", [("tiny", 581_298), ("light", 760_776), ("large", 4_762_920)])
def test_preset_parameter_counts(preset: str, params: int) -> None:
    """Counts published for the official presets at x4 (DESIGN.md)."""
    model = DLGSANet(preset_config(preset, 4))
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.preset == preset


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (5, 9), (8, 8), (13, 21), (30, 7)])
def test_output_shape(scale: int, size: tuple[int, int]) -> None:
    model = random_model(small_config(scale=scale))
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, size[0] * scale, size[1] * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(6, 6), (17, 23), (9, 40)])
def test_batch_equals_each_image_alone(size: tuple[int, int]) -> None:
    model = random_model(small_config(tlc_window=8))
    x = torch.rand(3, 3, *size)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5, rtol=0)


def test_tlc_changes_eval_but_not_train_mode() -> None:
    """Eval uses TLC windows (output depends on the window), train mode attends globally."""
    model = random_model(small_config(tlc_window=8))
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        windowed = model(x)
        model.set_tlc_window(None)
        whole = model(x)
        model.set_tlc_window(64)  # larger than the image: one window == whole image
        big = model(x)
        model.train()
        trained = model(x)
    assert (windowed - whole).abs().max() > 1e-4
    assert torch.allclose(whole, big, atol=1e-5)
    assert torch.allclose(whole, trained, atol=1e-5)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float16, 0.02), (torch.bfloat16, 0.1)])
def test_16bit_model_stays_16bit_over_tlc_windows(dtype: torch.dtype, tolerance: float) -> None:
    """A 16-bit model over a map larger than the TLC window, on the PyTorch-ops path (the one CUDA
    takes; autograd forces it here): every layer stays in the model's dtype (a float32 buffer once
    promoted the map and the next LayerNorm refused it), and the output is near float32's."""
    model = random_model(small_config(tlc_window=8))
    x = torch.rand(1, 3, 20, 17)
    with torch.no_grad():
        expected = model(x)
    out = model.to(dtype)(x.to(dtype).requires_grad_())
    assert out.dtype == dtype
    assert (out.float() - expected).abs().max().item() < tolerance


def test_train_mode_is_differentiable() -> None:
    model = random_model(small_config()).train()
    x = torch.rand(2, 3, 10, 10, requires_grad=True)
    model(x).abs().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("size,window,expected", [
    (37, 48, (0,)),                # smaller than the window: one window of the whole size
    (48, 48, (0,)),
    (100, 48, (0, 26, 52)),        # ceil(52 / 2) = 26, last snapped to 100 - 48
    (130, 48, (0, 41, 82)),
    (97, 48, (0, 25, 49)),
])
def test_tlc_window_starts_follow_official_grid(size: int, window: int, expected: tuple) -> None:
    """Worked by hand from the official grids(): step = ceil((size - k) / (n - 1)), last snapped."""
    assert window_starts(size, window) == expected


def test_scale_comes_from_weights() -> None:
    for scale in (2, 3, 4):
        model = random_model(small_config(scale=scale))
        loaded = dlgsanet.load_model(model.state_dict())
        assert loaded.scale == scale and loaded.config.tlc_window == {2: 96, 3: 72, 4: 48}[scale]
