"""Our (fast) network against the naive official-arithmetic reference, and the reference
against the official outputs.

The reference (``benchmarks/official_reference.py``) follows the official code step by step:
unfold dynamic conv, TLC windows cut and pasted in Python loops, LayerNorm through reshapes.
Every preset and scale, TLC on and off, odd and non-square sizes, smaller and larger than the
TLC window, batches, train mode and gradients must agree with it within 1e-4 (float32).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import OFFICIAL_FIXTURES
from reference_helpers import load_reference_module, model_pair
from dlgsanet import preset_config

TOL = 1e-4
FIXTURE_PTH = OFFICIAL_FIXTURES / "tiny_x4.pth"
FIXTURE_IO = OFFICIAL_FIXTURES / "tiny_x4.io.safetensors"
needs_fixtures = pytest.mark.skipif(not FIXTURE_IO.exists(), reason=f"official fixtures not found at {OFFICIAL_FIXTURES}")

PRESETS = ("tiny", "light", "large")
SCALES = (2, 3, 4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def run_both(ours: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return ours(x), reference(x)


# --- the yardstick itself ---------------------------------------------------------------------
@needs_fixtures
@pytest.mark.parametrize("case", [0, 1])
def test_reference_reproduces_official_outputs(case: int) -> None:
    """The naive reference is only a yardstick if it computes what the official code computed."""
    ref = load_reference_module().reference_preset("tiny", 4).eval()
    ref.load_state_dict(torch.load(FIXTURE_PTH, weights_only=True)["params_ema"], strict=True)
    io = load_file(str(FIXTURE_IO))
    with torch.no_grad():
        out = ref(io[f"input_{case}"])
    assert max_diff(out, io[f"output_{case}"]) < TOL


@pytest.mark.parametrize("preset", PRESETS)
def test_same_state_dict_keys_and_shapes(preset: str) -> None:
    """Official names: a state dict moves between the two models in both directions, strictly."""
    ours, ref = model_pair(preset_config(preset, 3))
    a, b = ours.state_dict(), ref.state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


# --- eval mode (TLC) ---------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale", SCALES)
def test_eval_small_input_one_window(preset: str, scale: int) -> None:
    """Smaller than the official TLC window (96/72/48): one window, the whole image."""
    ours, ref = model_pair(preset_config(preset, scale), seed=scale)
    a, b = run_both(ours, ref, torch.rand(1, 3, 13, 18))
    assert max_diff(a, b) < TOL


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale", SCALES)
def test_eval_overlapping_windows_odd_sizes(preset: str, scale: int) -> None:
    """Larger than the window in both directions, odd and non-square: overlapping windows with
    the last row/column snapped to the border (a small window keeps the test fast)."""
    ours, ref = model_pair(preset_config(preset, scale, tlc_window=11), seed=10 + scale)
    a, b = run_both(ours, ref, torch.rand(1, 3, 29, 17))
    assert max_diff(a, b) < TOL


@pytest.mark.parametrize("size", [(25, 9), (9, 25), (12, 12), (23, 24)])
def test_eval_window_larger_in_one_direction_only(size: tuple[int, int]) -> None:
    ours, ref = model_pair(preset_config("tiny", 2, tlc_window=12), seed=3)
    a, b = run_both(ours, ref, torch.rand(1, 3, *size))
    assert max_diff(a, b) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("scale,size", [(4, (53, 61)), (3, (75, 40)), (2, (100, 37))])
def test_eval_official_windows_tiny(scale: int, size: tuple[int, int]) -> None:
    """The official TLC windows of each scale on inputs larger than them."""
    ours, ref = model_pair(preset_config("tiny", scale), seed=20 + scale)
    a, b = run_both(ours, ref, torch.rand(1, 3, *size))
    assert max_diff(a, b) < TOL


@pytest.mark.slow
def test_eval_official_window_large_x4() -> None:
    ours, ref = model_pair(preset_config("large", 4), seed=7)
    a, b = run_both(ours, ref, torch.rand(1, 3, 50, 57))
    assert max_diff(a, b) < TOL


def test_eval_with_tlc_off_matches_reference_without_tlc() -> None:
    ours, ref = model_pair(preset_config("light", 4, tlc_window=8), seed=4)
    ours.set_tlc_window(None)
    ref.set_tlc_window(None)
    a, b = run_both(ours, ref, torch.rand(1, 3, 21, 26))
    assert max_diff(a, b) < TOL


def test_set_tlc_window_matches_reference_window() -> None:
    """Changing the window at run time changes the result exactly as in the reference."""
    ours, ref = model_pair(preset_config("tiny", 4), seed=5)
    x = torch.rand(1, 3, 27, 22)
    for window in (7, 10, 30):
        ours.set_tlc_window(window)
        ref.set_tlc_window(window)
        a, b = run_both(ours, ref, x)
        assert max_diff(a, b) < TOL


# --- batches -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "large"])
def test_batch_gives_each_image_exactly_its_own_result(preset: str) -> None:
    """The official TLC code asserts batch 1; ours batches windows of several images at once,
    and each image must get exactly (bit for bit) what it gets alone, and what the reference
    (looping over images) gives it."""
    ours, ref = model_pair(preset_config(preset, 4, tlc_window=10), seed=6)
    x = torch.rand(3, 3, 23, 19)
    with torch.no_grad():
        together = ours(x)
        alone = torch.cat([ours(x[i:i + 1]) for i in range(x.shape[0])])
        reference = ref(x)
    assert torch.equal(together, alone)
    assert max_diff(together, reference) < TOL


# --- train mode --------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_train_mode_matches_reference(preset: str) -> None:
    """Train mode attends over the whole patch (no TLC), as in official training."""
    ours, ref = model_pair(preset_config(preset, 2, tlc_window=6), seed=8)
    ours.train()
    ref.train()
    x = torch.rand(2, 3, 14, 11)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert max_diff(a, b) < TOL
    with torch.no_grad():  # and the TLC window really is ignored in train mode
        assert max_diff(ours(x), torch.cat([ours(x[:1]), ours(x[1:])])) == 0.0


@pytest.mark.parametrize("preset", ["tiny", "large"])
def test_gradients_match_reference(preset: str) -> None:
    """Every parameter's gradient and the input's, in train mode, against autograd through the
    naive reference (our dynamic conv has a hand-written backward)."""
    ours, ref = model_pair(preset_config(preset, 2), seed=9)
    ours.train()
    ref.train()
    x = torch.rand(2, 3, 9, 12)
    weight = torch.randn(2, 3, 18, 24)
    grads = []
    for model in (ours, ref):
        xi = x.clone().requires_grad_(True)
        loss = (model(xi) * weight).sum()
        params = [p for _, p in sorted(model.named_parameters())]
        grads.append(torch.autograd.grad(loss, [xi, *params]))
    names = ["input"] + [n for n, _ in sorted(ours.named_parameters())]
    for name, g_ours, g_ref in zip(names, *grads):
        scale = g_ref.abs().max().item() + 1e-12
        assert (g_ours - g_ref).abs().max().item() / scale < 1e-4, name


def test_eval_with_autograd_enabled_matches_inference() -> None:
    """Eval with gradients enabled (e.g. guided methods) takes the autograd paths; same result."""
    ours, ref = model_pair(preset_config("tiny", 4, tlc_window=9), seed=11)
    x = torch.rand(1, 3, 19, 15, requires_grad=True)
    with_grad = ours(x)
    with torch.inference_mode():
        fast = ours(x.detach())
    with torch.no_grad():
        reference = ref(x.detach())
    assert max_diff(with_grad.detach(), fast) < 1e-5
    assert max_diff(fast, reference) < TOL
    with_grad.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
