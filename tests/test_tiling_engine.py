"""The tiled inference engine (dlgsanet/tiling/engine.py): seams, shapes, progress, cancel, OOM, memory.

The models here are small test networks with a known receptive field (tiling_helpers.py), so
"tiled equals whole-image" is an exact expectation; accuracy with the real trained network is
measured in test_tiling_accuracy.py. Tests that compare the engine with ``model(x)`` ask for
``border="official"`` (no border padding); the default mirror padding is tested in
test_tiling_borders.py.
"""
from __future__ import annotations

import gc

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiling_helpers import LocalModel, PixelModel, one_thread, small_dlgsanet, structured, whole

from dlgsanet import ImageInputError, TileOutOfMemoryError, UpscaleCancelled, upscale
from dlgsanet.model import tlc
from dlgsanet.errors import DLGSANetError
from dlgsanet.errors import TileSettingsError
from dlgsanet.tiling.memory import is_out_of_memory
from dlgsanet.tiling.plan import plan_tiles

OFFICIAL = dict(border="official")  # the engine gives exactly model(x) on a whole image
SMALL = dict(min_tile_size=4, **OFFICIAL)
_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def tiles_of(h: int, w: int, tile: int, overlap: int) -> int:
    return len(plan_tiles(h, w, tile, overlap))


# -- seamless output ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 3, 37, 53), (1, 3, 53, 37), (1, 3, 3, 190),
                                   (1, 3, 190, 3), (3, 3, 40, 40)])
@pytest.mark.parametrize("tile,overlap", [(8, 4), (16, 4), (13, 8)])
def test_tiled_equals_whole_when_overlap_covers_the_receptive_field(shape, tile, overlap):
    """3x3 conv (radius 1) + ramp 0.5: the outer quarter of an overlap (>= 1 px) gets zero weight."""
    model = LocalModel(scale=2, kernel=3)
    x = torch.rand(shape)
    y = upscale(model, x, tile_size=tile, overlap=overlap, **SMALL)
    assert y.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3]) and y.dtype == x.dtype
    torch.testing.assert_close(y, whole(model, x), atol=2e-6, rtol=0)


def test_seams_appear_without_overlap():
    """The same check fails when tiles do not overlap: the test above can fail."""
    model = LocalModel(scale=2, kernel=3)
    x = torch.rand(1, 3, 48, 48)  # 3 x 3 tiles that meet edge to edge
    err = (upscale(model, x, tile_size=16, overlap=0, **SMALL) - whole(model, x)).abs().max()
    assert err > 1e-3


def test_pixelwise_model_is_exact_for_any_tiling_and_batch_items_are_independent():
    model = PixelModel(scale=3)
    x = torch.rand(4, 3, 29, 61)
    y = upscale(model, x, tile_size=10, overlap=3, **SMALL)
    torch.testing.assert_close(y, whole(model, x), atol=1e-6, rtol=0)
    torch.testing.assert_close(upscale(model, x[2:3], tile_size=7, overlap=2, **SMALL), y[2:3],
                               atol=1e-6, rtol=0)


def test_whole_image_when_it_fits_and_no_tile_size_is_given():
    model, sizes = LocalModel(scale=2), []

    def runner(t):
        sizes.append(tuple(t.shape[-2:]))
        return model(t)

    x = torch.rand(2, 3, 30, 50)
    y = upscale(model, x, runner=runner, **OFFICIAL)
    assert sizes == [(30, 50), (30, 50)]
    torch.testing.assert_close(y, whole(model, x), atol=1e-6, rtol=0)


def test_auto_tiles_when_the_memory_budget_is_small():
    model, sizes = LocalModel(scale=2), []

    def runner(t):
        sizes.append(tuple(t.shape[-2:]))
        return model(t)

    x = torch.rand(1, 3, 100, 100)
    budget = 5000 * 8  # a few thousand pixels' worth at the generic per-pixel estimate
    y = upscale(model, x, runner=runner, memory_budget=budget, overlap=4, min_tile_size=16, **OFFICIAL)
    assert len(sizes) > 1 and max(max(s) for s in sizes) < 100
    torch.testing.assert_close(y, whole(model, x), atol=2e-6, rtol=0)


def test_uint8_output_and_output_device_and_out_buffer():
    model = LocalModel(scale=2)
    x = torch.rand(2, 3, 21, 34)
    ref = whole(model, x)
    y8 = upscale(model, x, tile_size=8, overlap=4, output_dtype=torch.uint8, output_device="cpu", **SMALL)
    assert y8.dtype == torch.uint8 and y8.device.type == "cpu"
    assert (y8.float() - ref * 255).abs().max() <= 0.5 + 1e-3  # rounded, not truncated
    buf = torch.zeros(2, 42, 68, 3)  # channels-last buffer, written through a view
    got = upscale(model, x, tile_size=8, overlap=4, out=buf.movedim(-1, 1), **SMALL)
    assert got.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(buf.movedim(-1, 1), ref, atol=2e-6, rtol=0)


def test_half_precision_output_and_model():
    model = LocalModel(scale=2).to(torch.bfloat16)
    x = torch.rand(1, 3, 20, 20, dtype=torch.float16)
    y = upscale(model, x, tile_size=8, overlap=4, **SMALL)
    assert y.dtype == torch.float16 and float(y.min()) >= 0 and float(y.max()) <= 1


def test_empty_batch():
    assert upscale(PixelModel(2), torch.rand(0, 3, 5, 6)).shape == (0, 3, 10, 12)


@pytest.mark.parametrize("bad", [torch.rand(1, 4, 8, 8), torch.rand(3, 8, 8), torch.rand(1, 3, 0, 8),
                                 torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "image"])
def test_bad_images_raise_our_error(bad):
    with pytest.raises(ImageInputError):
        upscale(PixelModel(2), bad)


def test_bad_settings_raise_our_error():
    x = torch.rand(1, 3, 8, 8)
    for kwargs in [dict(tile_size=8, overlap=8), dict(tile_size=-1), dict(tile_size=32, min_tile_size=64),
                   dict(overlap=-2), dict(ramp=0)]:
        with pytest.raises(TileSettingsError):
            upscale(PixelModel(2), x, **kwargs)
    with pytest.raises(ImageInputError):
        upscale(PixelModel(2), x, out=torch.empty(1, 3, 8, 8))


def test_wrong_model_output_shape_is_a_clear_error():
    with pytest.raises(DLGSANetError, match="expected"):
        upscale(PixelModel(2), torch.rand(1, 3, 8, 8), runner=lambda t: t)


# -- TLC windows laid out as for the whole image --------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3, 90, 70), (1, 3, 50, 130)])  # portrait and landscape
def test_tiles_attend_over_the_whole_image_windows(shape):
    """Overlap 64 with ramp 0.5 leaves 16 zero-weight pixels at each inner edge: as many as the
    8-pixel window plus 8 pixels of convolutions, so tiled must equal whole-image output."""
    model = small_dlgsanet(scale=2, tlc_window=8)
    x = structured(*shape[-2:])
    ref = whole(model, x)
    y = upscale(model, x, tile_size=80, overlap=64, **SMALL)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
    # Each tile on its own (its own window layout) cannot match: the test can fail.
    y_own = upscale(model, x, tile_size=80, overlap=64, align_tlc=False, **SMALL)
    assert float((y_own - ref).abs().max()) > 5e-4


def test_subtiles_after_an_oom_keep_the_whole_image_windows():
    model = small_dlgsanet(scale=2, tlc_window=8)
    x = structured(100, 230)
    runner = FailAbove(model, limit=96, after=1)
    y = upscale(model, x, tile_size=160, overlap=64, min_tile_size=16, runner=runner, **OFFICIAL)
    assert runner.failed and runner.ok[0] == (100, 160) and max(map(max, runner.ok[1:])) <= 80
    torch.testing.assert_close(y, whole(model, x), atol=1e-5, rtol=0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400), st.sampled_from([8, 48, 72, 96]), st.data())
def test_framed_windows_are_the_whole_image_windows_shifted_inside_the_tile(full, window, data):
    size = data.draw(st.integers(1, full))
    offset = data.draw(st.integers(0, full - size))
    starts = tlc.framed_starts(size, window, offset, full)
    k = min(size, window)
    assert tlc.framed_starts(full, window, 0, full) == tlc.window_starts(full, window)
    assert list(starts) == sorted(set(starts)) and all(0 <= s <= size - k for s in starts)
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts:
        covered[s:s + k] = True
    assert bool(covered.all())
    whole = {s - offset for s in tlc.window_starts(full, window)}
    inside = {s for s in whole if 0 <= s and s + min(full, window) <= size}
    assert inside <= set(starts)  # every whole-image window inside the tile is kept as it is


def test_a_frame_equal_to_the_image_changes_nothing():
    model = small_dlgsanet(scale=2, tlc_window=8)
    x = structured(21, 35, batch=2)
    with torch.no_grad(), tlc.tlc_frame(0, 0, 21, 35):
        framed = model(x).clamp(0, 1)
    torch.testing.assert_close(framed, whole(model, x), atol=0, rtol=0)


# -- progress and cancel --------------------------------------------------------------------

def test_progress_at_start_and_after_each_tile_with_the_batch_total():
    calls, runs = [], []
    model = PixelModel(2)

    def runner(t):
        runs.append(len(calls))
        return model(t)

    upscale(model, torch.rand(2, 3, 30, 45), tile_size=16, overlap=4,
            progress=lambda d, t: calls.append((d, t)),
            runner=runner, **SMALL)
    total = 2 * tiles_of(30, 45, 16, 4)
    assert calls == [(i, total) for i in range(0, total + 1)]  # (0, total) before any tile
    assert runs == list(range(1, total + 1))  # progress reported after each tile, before the next


def _tensors_shaped(shape) -> list:
    gc.collect()
    return [o for o in gc.get_objects()
            if issubclass(type(o), torch.Tensor) and tuple(o.shape) == tuple(shape)]


@pytest.mark.parametrize("output_dtype", [torch.float32, torch.uint8])
def test_cancel_before_a_tile_raises_and_releases_everything(output_dtype):
    model, checks, runs = PixelModel(2), [], []
    x = torch.rand(1, 3, 41, 43)

    def cancel():
        checks.append(len(runs))
        return len(runs) == 3  # cancel before the 4th tile

    def runner(t):
        runs.append(1)
        return model(t)

    with pytest.raises(UpscaleCancelled) as info:
        upscale(model, x, tile_size=16, overlap=4, cancel=cancel, runner=runner,
                output_dtype=output_dtype, **SMALL)
    assert len(runs) == 3 and checks == [0, 1, 2, 3]
    # Even while the caller still holds the exception (and its traceback), no output buffer,
    # band or tile stays alive.
    assert info.value.__traceback__ is not None
    assert _tensors_shaped((1, 3, 82, 86)) == [] and _tensors_shaped((3, 82, 86)) == []


def test_cancel_before_the_first_tile_runs_nothing():
    runs = []
    with pytest.raises(UpscaleCancelled):
        upscale(PixelModel(2), torch.rand(1, 3, 8, 8), cancel=lambda: True, runner=lambda t: runs.append(t))
    assert runs == []


class HostInterrupt(BaseException):
    """Like ComfyUI's InterruptProcessingException (a BaseException since v0.3.x G3)."""


@pytest.mark.parametrize("where", ["cancel", "progress", "runner"])
@pytest.mark.parametrize("exc_type", [HostInterrupt, KeyboardInterrupt, ValueError])
def test_foreign_exceptions_pass_through_untouched(where, exc_type):
    model, error = PixelModel(2), exc_type("host says stop")
    raise_it = lambda *a: (_ for _ in ()).throw(error)  # noqa: E731
    kwargs = dict(cancel=None, progress=None, runner=None)
    kwargs[where] = raise_it
    with pytest.raises(exc_type) as info:
        upscale(model, torch.rand(1, 3, 20, 20), tile_size=8, overlap=2, **kwargs, **SMALL)
    assert info.value is error


# -- out of memory --------------------------------------------------------------------------

class FailAbove:
    """An injected tile runner that runs out of memory for tiles larger than ``limit`` pixels a side,
    optionally only after ``after`` successful calls (memory taken by someone else mid-way)."""

    def __init__(self, model, limit: int, after: int = 0, exc=torch.cuda.OutOfMemoryError) -> None:
        self.model, self.limit, self.after, self.exc = model, limit, after, exc
        self.ok: list[tuple[int, int]] = []
        self.failed: list[tuple[int, int]] = []

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        size = tuple(t.shape[-2:])
        if len(self.ok) >= self.after and max(size) > self.limit:
            self.failed.append(size)
            raise self.exc("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.ok.append(size)
        return self.model(t)


def test_oom_on_the_first_tile_replans_with_halved_tiles():
    model = LocalModel(scale=2)
    x = torch.rand(1, 3, 100, 90)
    runner, calls = FailAbove(model, limit=40), []
    y = upscale(model, x, tile_size=128, overlap=8, min_tile_size=16, runner=runner,
                progress=lambda d, t: calls.append((d, t)), **OFFICIAL)
    # The whole image (one tile) fails, then 50 -> 48 (a multiple of 8) fails, 24 fits.
    assert runner.failed == [(100, 90), (48, 48)]
    assert {max(s) for s in runner.ok} == {24}
    total = tiles_of(100, 90, 24, 8)
    # Each re-plan before the first finished tile announces its total at 0 done.
    first = [(0, 1), (0, tiles_of(100, 90, 48, 8)), (0, total)]
    assert calls == first + [(i, total) for i in range(1, total + 1)]
    torch.testing.assert_close(y, whole(model, x), atol=2e-6, rtol=0)


def test_oom_mid_way_keeps_finished_tiles_and_subtiles_the_rest():
    model = LocalModel(scale=2)
    x = torch.rand(1, 3, 64, 150)
    runner, calls = FailAbove(model, limit=40, after=2), []
    y = upscale(model, x, tile_size=64, overlap=8, min_tile_size=16, runner=runner,
                progress=lambda d, t: calls.append((d, t)), **OFFICIAL)
    total = tiles_of(64, 150, 64, 8)
    assert runner.ok[:2] == [(64, 64), (64, 64)] and len(runner.failed) == 1
    assert all(max(s) <= 32 for s in runner.ok[2:])
    assert calls == [(i, total) for i in range(0, total + 1)]  # the announced plan is kept
    torch.testing.assert_close(y, whole(model, x), atol=2e-6, rtol=0)


def test_oom_at_the_minimum_tile_raises_a_clear_error_and_releases_memory():
    model = PixelModel(2)
    runner = FailAbove(model, limit=10)
    with pytest.raises(TileOutOfMemoryError, match="smallest allowed") as info:
        upscale(model, torch.rand(1, 3, 70, 70), tile_size=64, overlap=4, min_tile_size=16, runner=runner,
                **OFFICIAL)
    assert isinstance(info.value, MemoryError)
    assert runner.failed == [(64, 64), (32, 32), (16, 16)] and runner.ok == []
    assert _tensors_shaped((1, 3, 140, 140)) == []


def test_oom_recognised_by_message_and_by_extra_types():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only the runtime's own types
    assert is_out_of_memory(MemoryError(), (MemoryError,))
    model = PixelModel(2)
    runner = FailAbove(model, limit=20, exc=MemoryError)
    y = upscale(model, torch.rand(1, 3, 30, 30), tile_size=30, overlap=4, min_tile_size=8,
                runner=runner, oom_types=(MemoryError,), **OFFICIAL)
    assert runner.failed == [(30, 30)] and y.shape == (1, 3, 60, 60)


def test_oom_runner_errors_that_are_not_oom_are_not_retried():
    model = PixelModel(2)
    runner = FailAbove(model, limit=10, exc=MemoryError)  # MemoryError is not OOM unless asked
    with pytest.raises(MemoryError):
        upscale(model, torch.rand(1, 3, 30, 30), tile_size=30, overlap=4, min_tile_size=8, runner=runner)
    assert len(runner.failed) == 1


@pytest.mark.gpu
def test_cuda_tiles_with_cpu_uint8_output_match_cpu():
    model = LocalModel(scale=2)
    x = torch.rand(1, 3, 70, 90)
    ref = upscale(model, x, tile_size=32, overlap=8, **SMALL)
    y = upscale(model.cuda(), x, tile_size=32, overlap=8, output_dtype=torch.uint8, **SMALL)
    assert y.device.type == "cpu" and (y.float() / 255 - ref).abs().max() <= 1 / 255
